"""kafka-python against finstream broker. Usage: scenario_kafka_python.py BOOTSTRAP"""
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from common import N, PARTITIONS, check, expect_values, fail, step, wait_until

C = "kafka-python"
bootstrap = sys.argv[1]
topic, g1, g2 = "compat-kafka-python", "cg-kafka-python-1", "cg-kafka-python-2"

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
step(C, "create topic (3 partitions)")

producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                         compression_type="gzip", linger_ms=5)
futures = [producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode()) for i in range(N)]
producer.flush(30)
for f in futures:
    f.get(timeout=30)
step(C, "produce 5000 idempotent gzip messages")


def consumer(group, **extra):
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False, **extra)


def drain(c, idle=3.0):
    got, last = [], time.time()
    while time.time() - last < idle:
        batch = c.poll(timeout_ms=200)
        for records in batch.values():
            got.extend(r.value.decode() for r in records)
            last = time.time()
    return got


c = consumer(g1)
expect_values(drain(c), N)
c.commit()
c.close()
step(C, "consume with a group and commit")

c = consumer(g1)
again = drain(c, idle=4.0)
check(again == [], f"restarted consumer read {len(again)} messages twice")
for i in range(N, N + 10):
    producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
producer.flush(30)
expect_values(drain(c), 10, start=N, what="new messages after restart")
c.commit()
c.close()
step(C, "restart reads nothing twice")

assignments = {}
stop = {"a": threading.Event(), "b": threading.Event()}


def member(name):
    m = consumer(g2)
    while not stop[name].is_set():
        m.poll(timeout_ms=100)
        assignments[name] = {tp.partition for tp in m.assignment()}
    m.close()
    assignments[name] = set()


threads = {n: threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b")}
for t in threads.values():
    t.start()


def split():
    a, b = assignments.get("a", set()), assignments.get("b", set())
    return a and b and not (a & b) and (a | b) == set(range(PARTITIONS))


wait_until(split, 120, "two members to split the partitions")
stop["b"].set()
threads["b"].join(30)
wait_until(lambda: assignments.get("a") == set(range(PARTITIONS)), 120, "the survivor to take over")
stop["a"].set()
threads["a"].join(30)
step(C, "two members split partitions, survivor takes over")

probe = KafkaConsumer(bootstrap_servers=bootstrap)
tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
check(all(v == 0 for v in probe.beginning_offsets(tps).values()), "earliest offsets")
check(sum(probe.end_offsets(tps).values()) == N + 10, "latest offsets")
by_time = probe.offsets_for_times({tp: 0 for tp in tps})
check(all(v is not None and v.offset == 0 for v in by_time.values()), f"offsets for time 0: {by_time}")
probe.close()
step(C, "list offsets (earliest, latest, by time)")

listed = admin.list_groups()
ids = {g["group_id"] for g in listed}
check({g1, g2} <= ids, f"list groups: {listed}")
desc = admin.describe_groups([g1])[g1]
check(desc["group_state"] == "Empty" and not desc["members"], f"describe {g1}: {desc}")
committed = admin.list_group_offsets({g1: None})[g1]
check(sum(o.offset for o in committed.values()) == N + 10, f"committed offsets: {committed}")
admin.close()
step(C, "list/describe groups")
