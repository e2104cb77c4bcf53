"""confluent-kafka's AdminClient against finstream broker. Usage: admin_confluent.py BOOTSTRAP

Steps: list_offsets (latest, earliest, by timestamp, read_committed) completes and is right;
create_partitions grows a topic.
"""
import sys
import time

from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from common import check, fail, step

C = "confluent-kafka admin"
base = {"bootstrap.servers": sys.argv[1], "broker.address.family": "v4"}
admin = AdminClient(base)
for f in admin.create_topics([NewTopic("adm", num_partitions=2, replication_factor=1)]).values():
    f.result()
p = Producer(base)
before = int(time.time() * 1000) - 1
for i in range(3):
    p.produce("adm", value=f"v{i}", partition=0)
check(p.flush(30) == 0, "undelivered")

specs = {"latest": (OffsetSpec.latest(), 3), "earliest": (OffsetSpec.earliest(), 0),
         "timestamp": (OffsetSpec.for_timestamp(before), 0)}
for iso in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
    for name, (spec, want) in specs.items():
        futures = admin.list_offsets({TopicPartition("adm", 0): spec}, isolation_level=iso,
                                     request_timeout=10)
        for tp, f in futures.items():
            try:
                got = f.result(timeout=15).offset
            except Exception as e:  # a result that never completes ends here
                fail(f"list_offsets {name} {iso}: {e}")
            check(got == want, f"list_offsets {name} {iso}: {got}, want {want}")
step(C, "list_offsets latest, earliest and by timestamp, both isolation levels")

for f in admin.create_partitions([NewPartitions("adm", 4)]).values():
    f.result()
md = admin.list_topics("adm", timeout=10)
check(len(md.topics["adm"].partitions) == 4, "create_partitions did not grow the topic")
step(C, "create_partitions grows a topic")
