// kafkajs' admin client against finstream broker. Usage: node admin_kafkajs.js BOOTSTRAP
// Steps: createPartitions grows a topic; alterConfigs and describeConfigs (values, bad ones
// refused); deleteTopicRecords moves the log start.
'use strict'
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs')

const C = 'kafkajs ' + require('kafkajs/package.json').version + ' admin'
const kafka = new Kafka({ clientId: 'compat-admin', brokers: [process.argv[2]], logLevel: logLevel.NOTHING })
const step = (name) => console.log(`PASS ${C}: ${name}`)
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1) }
const check = (cond, msg) => { if (!cond) fail(msg) }

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic: 'jsadm', numPartitions: 2 }], waitForLeaders: true })
  await admin.createPartitions({ topicPartitions: [{ topic: 'jsadm', count: 4 }] })
  const md = await admin.fetchTopicMetadata({ topics: ['jsadm'] })
  check(md.topics[0].partitions.length === 4, `partitions: ${md.topics[0].partitions.length}`)
  step('createPartitions grows a topic')

  const resource = { type: ConfigResourceTypes.TOPIC, name: 'jsadm' }
  await admin.alterConfigs({ resources: [{ ...resource, configEntries: [{ name: 'retention.ms', value: '3600000' }] }] })
  const described = await admin.describeConfigs({ resources: [resource], includeSynonyms: false })
  const entries = Object.fromEntries(described.resources[0].configEntries.map((e) => [e.configName, e.configValue]))
  check(entries['retention.ms'] === '3600000', `retention.ms described as ${entries['retention.ms']}`)
  let refused = false
  try {
    await admin.alterConfigs({ resources: [{ ...resource, configEntries: [{ name: 'retention.ms', value: 'soon' }] }] })
  } catch (e) {
    refused = /INVALID_CONFIG|invalid|retention/i.test(`${e.type} ${e.message}`)
  }
  check(refused, 'an invalid retention.ms was accepted')
  step('alterConfigs and describeConfigs, bad values refused')

  const producer = kafka.producer()
  await producer.connect()
  await producer.send({ topic: 'jsadm', messages: [0, 1, 2].map((i) => ({ key: `k${i}`, value: 'v', partition: 0 })) })
  await producer.disconnect()
  await admin.deleteTopicRecords({ topic: 'jsadm', partitions: [{ partition: 0, offset: '2' }] })
  const offsets = await admin.fetchTopicOffsets('jsadm')
  const p0 = offsets.find((o) => o.partition === 0)
  check(p0.low === '2' && p0.high === '3', `watermarks after deleteTopicRecords: ${p0.low}..${p0.high}`)
  step('deleteTopicRecords moves the log start')
  await admin.disconnect()
}

main().catch((e) => fail(e.stack || e))
