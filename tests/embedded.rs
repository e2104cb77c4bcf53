//! `finstream_broker::testing::EmbeddedKafka` used the way another project's tests would:
//! start it, point rdkafka at it, read back what was produced, drop it.

use std::time::Duration;

use finstream_broker::testing::EmbeddedKafka;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_test_produces_and_reads_back() {
    let kafka = EmbeddedKafka::start().expect("broker starts");
    kafka.create_topic("orders", 2).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .unwrap();
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        producer
            .send(
                FutureRecord::to("orders").partition(1).key(k).payload(v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let got = kafka.records("orders", 1).unwrap();
    let pairs: Vec<(i64, &[u8], &[u8])> = got
        .iter()
        .map(|r| {
            (
                r.offset,
                r.key.as_deref().unwrap(),
                r.value.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [(0, &b"a"[..], &b"1"[..]), (1, b"b", b"2"), (2, b"a", b"3")]
    );
    assert!(kafka.records("orders", 0).unwrap().is_empty());
    assert!(kafka.create_topic("orders", 1).is_err(), "exists already");
}

#[test]
fn a_plain_test_consumes_with_a_group_and_drop_stops_the_broker() {
    let kafka = EmbeddedKafka::start().unwrap();
    let bs = kafka.bootstrap_servers().to_string();
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::BaseRecord::to("auto")
                .key("k")
                .payload("hello"),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "g")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["auto"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let value = loop {
        assert!(std::time::Instant::now() < deadline, "nothing consumed");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            break m.payload().map(<[u8]>::to_vec);
        }
    };
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    drop(consumer);
    drop(kafka);
    assert!(
        std::net::TcpStream::connect(&bs).is_err(),
        "the broker stopped"
    );
}
