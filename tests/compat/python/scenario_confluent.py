"""confluent-kafka (librdkafka) against finstream broker. Usage: scenario_confluent.py BOOTSTRAP"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import N, PARTITIONS, check, expect_values, fail, step, wait_until

C = "confluent-kafka"
bootstrap = sys.argv[1]
topic, g1, g2 = "compat-confluent", "cg-confluent-1", "cg-confluent-2"
base = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}

admin = AdminClient(base)
for f in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
    f.result()
step(C, "create topic (3 partitions)")

producer = Producer({**base, "enable.idempotence": True, "compression.type": "zstd", "linger.ms": 5})
errors = []
for i in range(N):
    producer.produce(topic, key=f"key-{i}", value=f"value-{i}",
                     on_delivery=lambda err, msg: err and errors.append(err))
    producer.poll(0)
check(producer.flush(30) == 0, "undelivered messages")
check(not errors, f"delivery errors: {errors[:3]}")
step(C, "produce 5000 idempotent zstd messages")


def consumer(group, **extra):
    c = Consumer({**base, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 10000, **extra})
    c.subscribe([topic])
    return c


def drain(c, idle=3.0):
    got, last = [], time.time()
    while time.time() - last < idle:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got.append(m.value().decode())
        last = time.time()
    return got


c = consumer(g1)
got = drain(c)
expect_values(got, N)
c.commit(asynchronous=False)
c.close()
step(C, "consume with a group and commit")

c = consumer(g1)
again = drain(c, idle=4.0)
check(again == [], f"restarted consumer read {len(again)} messages twice")
for i in range(N, N + 10):
    producer.produce(topic, key=f"key-{i}", value=f"value-{i}")
producer.flush(30)
expect_values(drain(c), 10, start=N, what="new messages after restart")
c.commit(asynchronous=False)
c.close()
step(C, "restart reads nothing twice")

a = consumer(g2, **{"partition.assignment.strategy": "range"})
b = consumer(g2, **{"partition.assignment.strategy": "range"})


def assigned(x):
    return {p.partition for p in x.assignment()}


def both_assigned():
    a.poll(0.1)
    b.poll(0.1)
    pa, pb = assigned(a), assigned(b)
    return pa and pb and not (pa & pb) and (pa | pb) == set(range(PARTITIONS))


wait_until(both_assigned, 120, "two members to split the partitions")
b.close()


def survivor_has_all():
    a.poll(0.1)
    return assigned(a) == set(range(PARTITIONS))


wait_until(survivor_has_all, 120, "the survivor to take over all partitions")
a.close()
step(C, "two members split partitions, survivor takes over")

probe = Consumer({**base, "group.id": "probe"})
total = 0
for p in range(PARTITIONS):
    lo, hi = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    check(lo == 0, f"low watermark {lo}")
    total += hi
check(total == N + 10, f"high watermarks sum to {total}")
offsets = probe.offsets_for_times([TopicPartition(topic, p, 0) for p in range(PARTITIONS)], timeout=10)
check(all(o.offset == 0 for o in offsets), f"offsets for time 0: {offsets}")
probe.close()
g1_reader = Consumer({**base, "group.id": g1})
committed = g1_reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
check(sum(tp.offset for tp in committed) == N + 10, f"committed offsets of {g1}: {committed}")
g1_reader.close()
step(C, "list offsets (earliest, latest, by time)")

groups = admin.list_consumer_groups().result()
ids = {g.group_id for g in groups.valid}
check({g1, g2} <= ids, f"list groups: {ids}")
desc = admin.describe_consumer_groups([g1])[g1].result()
check(desc.state.name == "EMPTY", f"describe {g1}: state {desc.state}")
check(not desc.members, f"describe {g1}: members {desc.members}")
step(C, "list/describe groups")
