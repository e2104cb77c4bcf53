"""confluent-kafka's AdminClient against finstream broker. Usage: admin_confluent.py BOOTSTRAP

Steps: list_offsets (latest, earliest, by timestamp, max timestamp, read_committed) completes
and is right;
create_partitions grows a topic; incremental_alter_configs sets, appends and is checked;
delete_records moves the log start.
"""
import sys
import time

from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  ConfigSource, NewPartitions, NewTopic, OffsetSpec)

from common import check, fail, step

C = "confluent-kafka admin"
base = {"bootstrap.servers": sys.argv[1], "broker.address.family": "v4"}
admin = AdminClient(base)
for f in admin.create_topics([NewTopic("adm", num_partitions=2, replication_factor=1)]).values():
    f.result()
p = Producer(base)
before = int(time.time() * 1000) - 1
for i, delta in enumerate((1, 100, 50)):  # the largest timestamp is at offset 1
    p.produce("adm", value=f"v{i}", partition=0, timestamp=before + delta)
check(p.flush(30) == 0, "undelivered")

specs = {"latest": (OffsetSpec.latest(), 3), "earliest": (OffsetSpec.earliest(), 0),
         "timestamp": (OffsetSpec.for_timestamp(before), 0),
         "max_timestamp": (OffsetSpec.max_timestamp(), 1)}
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
step(C, "list_offsets latest, earliest, by timestamp and max_timestamp, both isolation levels")

for f in admin.create_partitions([NewPartitions("adm", 4)]).values():
    f.result()
md = admin.list_topics("adm", timeout=10)
check(len(md.topics["adm"].partitions) == 4, "create_partitions did not grow the topic")
step(C, "create_partitions grows a topic")

topic = ConfigResource(ConfigResource.Type.TOPIC, "adm")
topic.add_incremental_config(ConfigEntry("retention.ms", "3600000",
                                         incremental_operation=AlterConfigOpType.SET))
topic.add_incremental_config(ConfigEntry("cleanup.policy", "compact",
                                         incremental_operation=AlterConfigOpType.APPEND))
for f in admin.incremental_alter_configs([topic]).values():
    f.result()
described = list(admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm")]).values())[0].result()
retention, policy = described["retention.ms"], described["cleanup.policy"]
check(retention.value == "3600000" and retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
      f"retention.ms described as {retention.value} from {retention.source}")
check(policy.value == "delete,compact", f"cleanup.policy is {policy.value}")
check(described["max.message.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value,
      "max.message.bytes not from the broker's flags")
bad = ConfigResource(ConfigResource.Type.TOPIC, "adm")
bad.add_incremental_config(ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET))
try:
    for f in admin.incremental_alter_configs([bad]).values():
        f.result()
    fail("an invalid retention.ms was accepted")
except Exception as e:
    check("INVALID_CONFIG" in str(e) or "retention.ms" in str(e), f"unexpected error {e}")
step(C, "incremental_alter_configs sets and appends, describe_configs shows the sources, bad values refused")

for f in admin.delete_records([TopicPartition("adm", 0, 2)]).values():
    low = f.result()
check(low.low_watermark == 2, f"delete_records: low watermark {low.low_watermark}, want 2")
c = Consumer({**base, "group.id": "adm-wm"})
lo, hi = c.get_watermark_offsets(TopicPartition("adm", 0), timeout=10)
c.close()
check((lo, hi) == (2, 3), f"watermarks after delete_records: {(lo, hi)}")
step(C, "delete_records moves the log start")
