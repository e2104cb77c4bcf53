"""What a user's test module looks like with the finstream wheel installed: the
`kafka_bootstrap` fixture comes from the plugin, the client is confluent-kafka."""
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def test_produce_and_consume(kafka_bootstrap):
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for f in admin.create_topics([NewTopic("orders", num_partitions=2, replication_factor=1)]).values():
        f.result(timeout=30)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        p.produce("orders", key=f"k{i}", value=f"v{i}")
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "wheel-test",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["orders"])
    got = set()
    for _ in range(300):
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            got.add(m.value().decode())
        if len(got) == 10:
            break
    c.close()
    assert got == {f"v{i}" for i in range(10)}


def test_the_same_broker_for_the_session(kafka_bootstrap, finstream_kafka):
    assert finstream_kafka.bootstrap_servers == kafka_bootstrap
    assert kafka_bootstrap.startswith("127.0.0.1:")
