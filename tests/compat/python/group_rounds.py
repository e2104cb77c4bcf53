"""Consumer-group stability: two consumers of one group in one process, round after round.

Usage: group_rounds.py BOOTSTRAP CLIENT ROUNDS
CLIENT is kafka-python or confluent-kafka; both run with their default session and
heartbeat settings. Every round, two members of a fresh group join, must split a
3-partition topic between them, then one leaves and the other must take all three.
Run it while the machine's cores are busy (tests/compat.rs starts a CPU hog): a member
must not be expired while it is alive.
"""
import sys
import threading
import time

from common import PARTITIONS, fail, wait_until

bootstrap, client, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
topic = f"rounds-{client}"


def kafka_python_member(group):
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False)

    def poll():
        c.poll(timeout_ms=100)
        return {tp.partition for tp in c.assignment()}

    return poll, c.close


def confluent_member(group):
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])

    def poll():
        c.poll(0.1)
        return {tp.partition for tp in c.assignment()}

    return poll, c.close


def create_topic():
    if client == "kafka-python":
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        admin.close()
    else:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        from confluent_kafka import KafkaError, KafkaException
        for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
            try:
                f.result(30)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise


make = kafka_python_member if client == "kafka-python" else confluent_member
create_topic()
all_parts = set(range(PARTITIONS))
started = time.time()
for r in range(rounds):
    group = f"rounds-{client}-{r}"
    assignments, stop = {}, {"a": threading.Event(), "b": threading.Event()}

    def member(name):
        poll, close = make(group)
        while not stop[name].is_set():
            assignments[name] = poll()
        close()
        assignments[name] = set()

    threads = {n: threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b")}
    for t in threads.values():
        t.start()

    def split():
        a, b = assignments.get("a", set()), assignments.get("b", set())
        return a and b and not (a & b) and (a | b) == all_parts

    t0 = time.time()
    wait_until(split, 120, f"round {r}: two members to split the partitions")
    t1 = time.time()
    stop["b"].set()
    threads["b"].join(60)
    if threads["b"].is_alive():
        fail(f"round {r}: member b did not close")
    wait_until(lambda: assignments.get("a") == all_parts, 120, f"round {r}: the survivor to take over")
    t2 = time.time()
    stop["a"].set()
    threads["a"].join(60)
    print(f"ROUND {client} {r}: split after {t1 - t0:.1f} s, takeover after {t2 - t1:.1f} s",
          flush=True)
print(f"PASS {client}: {rounds} rounds in {time.time() - started:.0f} s", flush=True)
