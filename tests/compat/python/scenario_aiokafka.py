"""aiokafka (newest and 0.10.0, the original tool's version) against finstream broker.
Usage: scenario_aiokafka.py BOOTSTRAP"""
import asyncio
import sys
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common import N, PARTITIONS, check, expect_values, fail, step

C = f"aiokafka {aiokafka.__version__}"
bootstrap = sys.argv[1]
suffix = aiokafka.__version__.replace(".", "")
topic, g1, g2 = f"compat-aiokafka{suffix}", f"cg-aiokafka{suffix}-1", f"cg-aiokafka{suffix}-2"


def consumer(group):
    return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            session_timeout_ms=10000, heartbeat_interval_ms=1000)


async def drain(c, idle=3.0):
    got, last = [], time.time()
    while time.time() - last < idle:
        batch = await c.getmany(timeout_ms=200)
        for records in batch.values():
            got.extend(r.value.decode() for r in records)
            last = time.time()
    return got


async def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    fail(f"timed out after {timeout}s waiting for {what}")


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    step(C, "create topic (3 partitions)")

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                compression_type="gzip", linger_ms=5)
    await producer.start()
    futures = [await producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
               for i in range(N)]
    await asyncio.gather(*futures)
    step(C, "produce 5000 idempotent gzip messages")

    c = consumer(g1)
    await c.start()
    expect_values(await drain(c), N)
    await c.commit()
    await c.stop()
    step(C, "consume with a group and commit")

    c = consumer(g1)
    await c.start()
    again = await drain(c, idle=4.0)
    check(again == [], f"restarted consumer read {len(again)} messages twice")
    for i in range(N, N + 10):
        await producer.send_and_wait(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
    expect_values(await drain(c), 10, start=N, what="new messages after restart")
    await c.commit()
    await c.stop()
    step(C, "restart reads nothing twice")

    a, b = consumer(g2), consumer(g2)
    await a.start()
    await b.start()
    stop = asyncio.Event()

    async def pump(x):
        while not stop.is_set():
            await x.getmany(timeout_ms=100)

    pumps = [asyncio.ensure_future(pump(a)), asyncio.ensure_future(pump(b))]

    def parts(x):
        return {tp.partition for tp in x.assignment()}

    def split():
        pa, pb = parts(a), parts(b)
        return pa and pb and not (pa & pb) and (pa | pb) == set(range(PARTITIONS))

    await wait_until(split, 120, "two members to split the partitions")
    pumps[1].cancel()
    await b.stop()
    await wait_until(lambda: parts(a) == set(range(PARTITIONS)), 120, "the survivor to take over")
    stop.set()
    pumps[0].cancel()
    await a.stop()
    step(C, "two members split partitions, survivor takes over")

    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    check(all(v == 0 for v in (await probe.beginning_offsets(tps)).values()), "earliest offsets")
    check(sum((await probe.end_offsets(tps)).values()) == N + 10, "latest offsets")
    by_time = await probe.offsets_for_times({tp: 0 for tp in tps})
    check(all(v is not None and v.offset == 0 for v in by_time.values()), f"offsets for time 0: {by_time}")
    await probe.stop()
    step(C, "list offsets (earliest, latest, by time)")

    listed = await admin.list_consumer_groups()
    ids = {g[0] for g in listed}
    check({g1, g2} <= ids, f"list groups: {listed}")
    described = await admin.describe_consumer_groups([g1])
    groups = [g for resp in described for g in resp.groups]
    # (error_code, group_id, state, protocol_type, protocol, members, ...)
    check(groups and groups[0][1] == g1 and groups[0][2] == "Empty", f"describe {g1}: {groups}")
    committed = await admin.list_consumer_group_offsets(g1)
    check(sum(o.offset for o in committed.values()) == N + 10, f"committed offsets: {committed}")
    await producer.stop()
    await admin.close()
    step(C, "list/describe groups")


asyncio.run(main())
