//! Topics that do not grow forever: DeleteRecords moves a partition's log start durably,
//! and retention (by record age, by partition size) deletes old segments in the
//! background; consumers below the start get OFFSET_OUT_OF_RANGE and their reset policy;
//! DescribeLogDirs reports the sizes.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn send(bs: &str, topic: &str, values: std::ops::Range<usize>, timestamp: i64) {
    let p = producer(bs, &[]);
    for i in values {
        let value = format!("{i:04}-{}", "x".repeat(80));
        p.send(
            FutureRecord::<(), _>::to(topic)
                .partition(0)
                .payload(&value)
                .timestamp(timestamp),
            WAIT,
        )
        .await
        .unwrap();
    }
}

/// The log start the broker reports (ListOffsets earliest) and the high watermark.
fn watermarks(bs: &str, topic: &str) -> (i64, i64) {
    let c = assigned_consumer(bs, topic, 1, &[]);
    tokio::task::block_in_place(|| c.fetch_watermarks(topic, 0, WAIT)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_start_durably_and_consumers_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start_with(dir.path(), &["--segment-mb", "1"]);
    let bs = broker.addr.clone();
    create_topic(&bs, "trimmed", 1).await;
    send(&bs, "trimmed", 0..100, now_ms()).await;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, Offset::Offset(40))
        .unwrap();
    let out = admin(&bs)
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    let r = out.find_partition("trimmed", 0).unwrap();
    assert_eq!((r.offset(), r.error()), (Offset::Offset(40), Ok(())));
    // above the high watermark: refused
    let mut past = TopicPartitionList::new();
    past.add_partition_offset("trimmed", 0, Offset::Offset(1000))
        .unwrap();
    let out = admin(&bs)
        .delete_records(&past, &AdminOptions::new())
        .await
        .unwrap();
    assert!(out.find_partition("trimmed", 0).unwrap().error().is_err());
    assert_eq!(watermarks(&bs, "trimmed"), (40, 100));
    broker.kill9();
    let broker = BinaryBroker::start_with(dir.path(), &["--listen", &bs, "--segment-mb", "1"]);
    assert_eq!(watermarks(&broker.addr, "trimmed"), (40, 100));
    // a consumer asking for offset 10 is out of range and resets to the start
    let c = assigned_consumer(
        &broker.addr,
        "trimmed",
        1,
        &[("auto.offset.reset", "earliest")],
    );
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("trimmed", 0, Offset::Offset(10))
        .unwrap();
    c.assign(&at).unwrap();
    let got = consume_n(&c, 60, WAIT).await;
    assert_eq!(got[0].offset, 40);
    assert_eq!(got[59].offset, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments_by_age_and_by_size() {
    let (aging, sized) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let broker = start_broker_with(Some(aging.path()), |c| {
        c.segment_bytes = 2_000;
        c.log_retention = Some(Duration::from_secs(3600));
        c.log_retention_bytes = None;
        c.log_retention_check_interval = Duration::from_millis(100);
    })
    .await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "aging", 1).await;
    // two hours old, then fresh: the old segments go, the fresh records stay
    send(&bs, "aging", 0..100, now_ms() - 7_200_000).await;
    send(&bs, "aging", 100..120, now_ms()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while watermarks(&bs, "aging").0 < 90 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (start, end) = watermarks(&bs, "aging");
    assert!(start <= 100, "fresh records deleted: start {start}");
    assert_eq!(end, 120);
    let c = assigned_consumer(&bs, "aging", 1, &[]);
    let got = consume_n(&c, (end - start) as usize, WAIT).await;
    assert_eq!(got[0].offset, start);
    broker.shutdown().await.unwrap();

    let broker = start_broker_with(Some(sized.path()), |c| {
        c.segment_bytes = 2_000;
        c.log_retention = None;
        c.log_retention_bytes = Some(6_000);
        c.log_retention_check_interval = Duration::from_millis(100);
    })
    .await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "sized", 1).await;
    send(&bs, "sized", 0..300, now_ms()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while watermarks(&bs, "sized").0 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (start, end) = watermarks(&bs, "sized");
    // about 130 bytes a record: 6,000 bytes plus at most one segment hold 60 records or so
    assert!(end - start < 80 && end - start > 30, "kept {start}..{end}");
    // DescribeLogDirs reports the partition's size on disk: within the limit plus a segment
    use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};
    let mut c = RawClient::connect(&bs);
    let dirs: DescribeLogDirsResponse = c.call(
        ApiKey::DescribeLogDirs,
        4,
        &DescribeLogDirsRequest::default().with_topics(None),
    );
    assert_eq!(dirs.results.len(), 1);
    let result = &dirs.results[0];
    assert_eq!(result.log_dir.as_str(), sized.path().display().to_string());
    assert!(result.usable_bytes > 0);
    let topic = result
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "sized")
        .unwrap();
    let size = topic.partitions[0].partition_size;
    assert!((4_000..=8_000).contains(&size), "size {size}");
    broker.shutdown().await.unwrap();
}
