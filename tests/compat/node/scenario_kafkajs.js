// kafkajs against finstream broker. Usage: node scenario_kafkajs.js BOOTSTRAP
'use strict'
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const C = 'kafkajs ' + require('kafkajs/package.json').version
const N = 5000
const PARTITIONS = 3
const bootstrap = process.argv[2]
const topic = 'compat-kafkajs'
const g1 = 'cg-kafkajs-1'
const g2 = 'cg-kafkajs-2'
const kafka = new Kafka({ clientId: 'compat', brokers: [bootstrap], logLevel: logLevel.WARN })

const step = (name) => console.log(`PASS ${C}: ${name}`)
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1) }
const check = (cond, msg) => { if (!cond) fail(msg) }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function waitUntil (pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (pred()) return
    await sleep(50)
  }
  fail(`timed out waiting for ${what}`)
}

function expectValues (got, n, start, what) {
  check(got.length === n, `${what}: got ${got.length} records, want ${n}`)
  const set = new Set(got)
  check(set.size === n, `${what}: duplicates`)
  for (let i = start; i < start + n; i++) check(set.has(`value-${i}`), `${what}: missing value-${i}`)
}

// Consumes until no record arrived for idleMs; offsets are committed by kafkajs after
// each batch (autoCommit) and on disconnect.
async function consumeAll (groupId, idleMs, whileRunning) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  let last = Date.now()
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); last = Date.now() } })
  if (whileRunning) await whileRunning(() => { last = Date.now() })
  while (Date.now() - last < idleMs) await sleep(100)
  await consumer.disconnect()
  return got
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true })
  step('create topic (3 partitions)')

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  for (let start = 0; start < N; start += 500) {
    const messages = []
    for (let i = start; i < start + 500; i++) messages.push({ key: `key-${i}`, value: `value-${i}` })
    await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages })
  }
  step('produce 5000 idempotent gzip messages')

  expectValues(await consumeAll(g1, 4000), N, 0, 'messages')
  step('consume with a group and commit')

  const again = await consumeAll(g1, 5000, async (touch) => {
    await sleep(4000) // joined and fetched by now: nothing may arrive
    const messages = []
    for (let i = N; i < N + 10; i++) messages.push({ key: `key-${i}`, value: `value-${i}` })
    await producer.send({ topic, acks: -1, messages })
    touch()
  })
  expectValues(again, 10, N, 'after restart only the new messages')
  step('restart reads nothing twice')

  const assigned = { a: [], b: [] }
  const member = async (name) => {
    const c = kafka.consumer({ groupId: g2, sessionTimeout: 10000, heartbeatInterval: 500 })
    c.on(c.events.GROUP_JOIN, (e) => { assigned[name] = (e.payload.memberAssignment[topic] || []).slice().sort() })
    await c.connect()
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({ eachMessage: async () => {} })
    return c
  }
  const a = await member('a')
  const b = await member('b')
  await waitUntil(() => {
    const all = [...assigned.a, ...assigned.b].sort()
    return assigned.a.length > 0 && assigned.b.length > 0 && all.join() === '0,1,2'
  }, 120000, 'two members to split the partitions')
  await b.disconnect()
  await waitUntil(() => assigned.a.join() === '0,1,2', 120000, 'the survivor to take over')
  await a.disconnect()
  step('two members split partitions, survivor takes over')

  const offsets = await admin.fetchTopicOffsets(topic)
  check(offsets.every((o) => o.low === '0'), `earliest offsets ${JSON.stringify(offsets)}`)
  check(offsets.reduce((s, o) => s + Number(o.high), 0) === N + 10, `latest offsets ${JSON.stringify(offsets)}`)
  const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, 0)
  check(byTime.every((o) => o.offset === '0'), `offsets for time 0 ${JSON.stringify(byTime)}`)
  step('list offsets (earliest, latest, by time)')

  const { groups } = await admin.listGroups()
  const ids = groups.map((g) => g.groupId)
  check(ids.includes(g1) && ids.includes(g2), `list groups ${JSON.stringify(groups)}`)
  const described = await admin.describeGroups([g1])
  check(described.groups[0].state === 'Empty' && described.groups[0].members.length === 0,
    `describe ${JSON.stringify(described)}`)
  const committed = await admin.fetchOffsets({ groupId: g1, topics: [topic] })
  const sum = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0)
  check(sum === N + 10, `committed offsets ${JSON.stringify(committed)}`)
  step('list/describe groups')

  await producer.disconnect()
  await admin.disconnect()
}

main().catch((e) => fail(e.stack || String(e)))
