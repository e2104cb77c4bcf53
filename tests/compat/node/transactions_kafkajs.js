// kafkajs transactions against finstream broker. Usage: node transactions_kafkajs.js BOOTSTRAP
// Steps: commit and abort seen by a read_committed consumer (kafkajs' default isolation);
// sendOffsets commits a consumer group's offsets inside the transaction.
'use strict'
const { Kafka, logLevel } = require('kafkajs')

const C = 'kafkajs ' + require('kafkajs/package.json').version + ' transactions'
const bootstrap = process.argv[2]
const kafka = new Kafka({ clientId: 'compat-txn', brokers: [bootstrap], logLevel: logLevel.WARN })

const step = (name) => console.log(`PASS ${C}: ${name}`)
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1) }
const check = (cond, msg) => { if (!cond) fail(msg) }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Values of `topic` read by a read_committed consumer until idleMs pass with nothing new.
async function readCommitted (topic, groupId, idleMs) {
  const consumer = kafka.consumer({ groupId, readUncommitted: false, sessionTimeout: 10000 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  let last = Date.now()
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); last = Date.now() } })
  while (Date.now() - last < idleMs) await sleep(100)
  await consumer.disconnect()
  return got
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic: 'js-tx', numPartitions: 1 }, { topic: 'js-in', numPartitions: 1 }], waitForLeaders: true })

  const producer = kafka.producer({ transactionalId: 'js-txn', idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const send = async (values, commit) => {
    const txn = await producer.transaction()
    await txn.send({ topic: 'js-tx', messages: values.map((value) => ({ value })) })
    if (commit) await txn.commit(); else await txn.abort()
  }
  await send(['c0', 'c1', 'c2'], true)
  await send(['a0', 'a1'], false)
  await send(['d0'], true)
  const got = await readCommitted('js-tx', 'js-reader', 4000)
  check(JSON.stringify(got) === JSON.stringify(['c0', 'c1', 'c2', 'd0']), `read_committed saw ${got}`)
  step('commit and abort, read_committed sees committed records only')

  const plain = kafka.producer()
  await plain.connect()
  await plain.send({ topic: 'js-in', messages: [{ value: 'x' }, { value: 'y' }] })
  await plain.disconnect()
  const txn = await producer.transaction()
  await txn.send({ topic: 'js-tx', messages: [{ value: 'with-offsets' }] })
  await txn.sendOffsets({ consumerGroupId: 'js-group', topics: [{ topic: 'js-in', partitions: [{ partition: 0, offset: '2' }] }] })
  await txn.commit()
  const offsets = await admin.fetchOffsets({ groupId: 'js-group', topics: ['js-in'] })
  const committed = offsets[0].partitions[0].offset
  check(committed === '2', `group offset after the transaction is ${committed}, want 2`)
  step('sendOffsets commits the group offset with the transaction')
  await producer.disconnect()
  await admin.disconnect()
}

main().catch((e) => fail(e.stack || String(e)))
