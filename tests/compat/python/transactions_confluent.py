"""confluent-kafka transactions against finstream broker. Usage: transactions_confluent.py BOOTSTRAP

Steps: commit/abort visibility for read_committed and read_uncommitted readers; an open
transaction holds read_committed readers at the last stable offset, a plain record written
after it included; a zombie producer is fenced; a consume-transform-produce loop with
send_offsets_to_transaction whose processor dies mid-transaction and is replaced produces
each input exactly once.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, fail, step

C = "confluent-kafka transactions"
bootstrap = sys.argv[1]
base = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}

admin = AdminClient(base)
topics = [NewTopic("tx", num_partitions=2, replication_factor=1),
          NewTopic("lso", num_partitions=1, replication_factor=1),
          NewTopic("zombie", num_partitions=1, replication_factor=1),
          NewTopic("in", num_partitions=1, replication_factor=1),
          NewTopic("out", num_partitions=1, replication_factor=1)]
for f in admin.create_topics(topics).values():
    f.result()


def txn_producer(tid, **extra):
    p = Producer({**base, "transactional.id": tid, "linger.ms": 1, **extra})
    p.init_transactions(30)
    return p


def reader(topic, partitions, isolation):
    c = Consumer({**base, "group.id": "unused", "enable.auto.commit": False,
                  "isolation.level": isolation, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return c


def drain(c, idle=3.0):
    """Values by partition until `idle` seconds pass with nothing new."""
    got, last = {}, time.time()
    while time.time() - last < idle:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got.setdefault(m.partition(), []).append(m.value().decode())
        last = time.time()
    return got


def values(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


# 1. visibility
p = txn_producer("py-visibility")
for prefix, commit in (("c", True), ("a", False), ("d", True)):
    p.begin_transaction()
    for i, v in enumerate(values(prefix, 10)):
        p.produce("tx", value=v, partition=i % 2)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def want(parity, prefixes):
    return [v for pre in prefixes for i, v in enumerate(values(pre, 10)) if i % 2 == parity]


got = drain(reader("tx", 2, "read_committed"))
check(got.get(0) == want(0, "cd") and got.get(1) == want(1, "cd"), f"read_committed saw {got}")
got = drain(reader("tx", 2, "read_uncommitted"))
check(got.get(0) == want(0, "cad") and got.get(1) == want(1, "cad"), f"read_uncommitted saw {got}")
step(C, "read_committed sees committed records in order, read_uncommitted also aborted ones, nobody markers")

# 2. last stable offset
p = txn_producer("py-lso")
p.begin_transaction()
for v in values("t", 5):
    p.produce("lso", value=v, partition=0)
p.flush(30)
plain = Producer(base)
plain.produce("lso", value="plain", partition=0)
check(plain.flush(30) == 0, "plain record undelivered")
committed = reader("lso", 1, "read_committed")
check(drain(committed, 2.0) == {}, "read_committed read past the last stable offset")
low, high = committed.get_watermark_offsets(TopicPartition("lso", 0), timeout=10, cached=False)
check(high == 0, f"read_committed high watermark (last stable offset) is {high}, want 0")
p.commit_transaction(30)
got = drain(committed)
check(got.get(0) == values("t", 5) + ["plain"], f"after commit read_committed saw {got}")
step(C, "an open transaction holds read_committed readers at the last stable offset")

# 3. zombie fencing
zombie = txn_producer("py-zombie")
zombie.begin_transaction()
zombie.produce("zombie", value="from-zombie", partition=0)
zombie.flush(30)
fresh = txn_producer("py-zombie")
try:
    zombie.commit_transaction(30)
    fail("the zombie's commit succeeded")
except KafkaException as e:
    err = e.args[0]
    check(err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                        KafkaError.INVALID_PRODUCER_EPOCH),
          f"zombie got {err}, not a fencing error")
fresh.begin_transaction()
fresh.produce("zombie", value="from-fresh", partition=0)
fresh.commit_transaction(30)
got = drain(reader("zombie", 1, "read_committed"))
check(got == {0: ["from-fresh"]}, f"read_committed saw {got}")
step(C, "a zombie producer is fenced and its transaction aborted")

# 4. consume-transform-produce
inputs = values("in", 100)
for v in inputs:
    plain.produce("in", value=v, partition=0)
check(plain.flush(30) == 0, "inputs undelivered")


def processor(die_after=None):
    """Batches of up to 10 inputs, each in one transaction with its input offsets, until
    every input is consumed; with die_after, stops in the middle of that batch."""
    consumer = Consumer({**base, "group.id": "py-ctp", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "session.timeout.ms": 6000})
    consumer.subscribe(["in"])
    producer = txn_producer("py-ctp-processor")
    batches, deadline = 0, time.time() + 120
    while time.time() < deadline:
        msgs = [m for m in consumer.consume(num_messages=10, timeout=1) if not m.error()]
        if not msgs:
            position = consumer.position([TopicPartition("in", 0)])[0].offset
            if position >= len(inputs):
                consumer.close()
                return batches
            continue
        producer.begin_transaction()
        for i, m in enumerate(msgs):
            if die_after == batches and i == len(msgs) // 2:
                producer.flush(30)
                return batches  # dies mid-transaction, consumer never closed
            producer.produce("out", value=b"out-" + m.value(), partition=0)
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        batches += 1
    fail("the processor did not reach the end of the input in 120 s")


check(processor(die_after=3) == 3, "first processor")
processor()
got = drain(reader("out", 1, "read_committed"))
check(got.get(0) == [f"out-{v}" for v in inputs],
      f"output is not each input once: {len(got.get(0, []))} records")
step(C, "consume-transform-produce with a replaced processor: each input exactly once")
