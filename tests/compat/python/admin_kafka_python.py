"""kafka-python's KafkaAdminClient against finstream broker. Usage: admin_kafka_python.py BOOTSTRAP

Steps: create_partitions grows a topic; alter_configs and describe_configs (values, bad ones
refused); delete_records moves the log start.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

from common import check, step

C = "kafka-python admin"
bs = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bs)
admin.create_topics([NewTopic("kpadm", num_partitions=2, replication_factor=1)])
admin.create_partitions({"kpadm": NewPartitions(total_count=4)})
meta = KafkaConsumer(bootstrap_servers=bs)
check(meta.partitions_for_topic("kpadm") == {0, 1, 2, 3},
      f"partitions {meta.partitions_for_topic('kpadm')}")
step(C, "create_partitions grows a topic")

ok = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kpadm",
                                         configs={"retention.ms": "3600000", "cleanup.policy": "compact,delete"})])
check(ok == {"topic": {"kpadm": "OK"}}, f"alter_configs answered {ok}")
described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kpadm")])
entries = described["topic"]["kpadm"]
retention = entries.get("retention.ms", {})
check(retention.get("value") == "3600000" and retention.get("config_source") == "DYNAMIC_TOPIC_CONFIG",
      f"retention.ms described as {retention}")
check(entries.get("cleanup.policy", {}).get("value") == "compact,delete", f"cleanup.policy is {entries.get('cleanup.policy')}")
bad = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kpadm", configs={"retention.ms": "soon"})])
answer = str(bad["topic"]["kpadm"])
check("Error 40" in answer and "retention.ms" in answer, f"an invalid retention.ms was answered {answer}")
step(C, "alter_configs and describe_configs, bad values refused")

p = KafkaProducer(bootstrap_servers=bs)
for i in range(3):
    p.send("kpadm", key=b"k%d" % i, value=b"v", partition=0)
p.flush()
tp = TopicPartition("kpadm", 0)
admin.delete_records({tp: 2})
check(meta.beginning_offsets([tp])[tp] == 2, f"log start after delete_records: {meta.beginning_offsets([tp])}")
step(C, "delete_records moves the log start")
