//! Compacted topics (`cleanup.policy=compact`): the cleaner keeps the latest value of each
//! key at its original offset, in every codec, while producers go on writing; tombstones
//! go once `delete.retention.ms` has passed; and a kill -9 at any moment of a pass, even
//! between the steps of a segment swap, loses nothing.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;

const WAIT: Duration = Duration::from_secs(60);

/// What the producers were told: offset -> (key, value; None for a tombstone).
type Model = BTreeMap<i64, (String, Option<String>)>;

async fn create_compacted(bs: &str, topic: &str, segment_bytes: &str) {
    let created = admin(bs)
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")
                .set("segment.bytes", segment_bytes)
                .set("segment.ms", "500")
                .set("min.cleanable.dirty.ratio", "0.01")
                .set("delete.retention.ms", "1500")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
}

/// Sends `(key, value)` pairs with `codec`, recording each acknowledged offset in `model`.
async fn send(
    bs: &str,
    topic: &str,
    codec: &str,
    pairs: &[(String, Option<String>)],
    model: &mut Model,
) {
    let p = producer(bs, &[("compression.type", codec), ("linger.ms", "20")]);
    let mut pending = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let mut r = FutureRecord::to(topic).partition(0).key(k.as_str());
        if let Some(v) = v {
            r = r.payload(v.as_str());
        }
        pending.push(p.send_result(r).map_err(|(e, _)| e).expect("queued"));
    }
    for ((k, v), d) in pairs.iter().zip(pending) {
        let d = d
            .await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("delivered");
        model.insert(d.offset, (k.clone(), v.clone()));
    }
}

/// Every record from the start to the high watermark: offset -> (key, value).
async fn read_all(bs: &str, topic: &str) -> Model {
    let c = assigned_consumer(bs, topic, 1, &[]);
    let (_, hw) = tokio::task::block_in_place(|| c.fetch_watermarks(topic, 0, WAIT)).unwrap();
    let mut out = Model::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // the last record is the latest of its key (never a tombstone here): it always stays
    while hw > 0 && out.keys().next_back().is_none_or(|&o| o < hw - 1) {
        let got = consume_n(&c, 1, deadline - tokio::time::Instant::now()).await;
        let r = &got[0];
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        let value = r.value.clone().map(|v| String::from_utf8(v).unwrap());
        out.insert(r.offset, (key, value));
    }
    out
}

/// The latest value of each key (a tombstone removes the key).
fn latest(m: &Model) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in m.values() {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    out
}

/// Checks what a reader sees against what was produced: the same record at every offset
/// that is left, and the same latest value of every key.
fn check(seen: &Model, model: &Model) {
    check_maybe(seen, model, &HashSet::new());
}

/// [`check`], where sends in `maybe` may have been stored without an acknowledgement (the
/// broker died before answering): they may show up at offsets the model does not know.
fn check_maybe(seen: &Model, model: &Model, maybe: &HashSet<(String, Option<String>)>) {
    for (o, r) in seen {
        let known = model.get(o) == Some(r) || (!model.contains_key(o) && maybe.contains(r));
        assert!(
            known,
            "offset {o} holds {r:?}, the model {:?}",
            model.get(o)
        );
    }
    let (got, want) = (latest(seen), latest(model));
    assert_eq!(got.len(), want.len(), "keys differ");
    for (k, v) in &want {
        let newer_maybe = || {
            let at = model
                .iter()
                .rev()
                .find(|(_, (mk, _))| mk == k)
                .map(|(o, _)| *o);
            seen.iter().any(|(o, (sk, sv))| {
                sk == k
                    && Some(*o) > at
                    && sv.as_ref() == got.get(k)
                    && maybe.contains(&(sk.clone(), sv.clone()))
            })
        };
        assert!(
            got.get(k) == Some(v) || newer_maybe(),
            "latest of {k}: {:?}, want {v}",
            got.get(k)
        );
    }
}

fn updates(keys: usize, rounds: usize, tag: &str) -> Vec<(String, Option<String>)> {
    (0..rounds)
        .flat_map(|r| {
            (0..keys).map(move |k| {
                (
                    format!("k{k:03}"),
                    Some(format!("{tag}-{r}-{}", "v".repeat(40))),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_value_of_each_key_stays_in_every_codec_while_producers_write() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(Some(dir.path()), |c| {
        c.log_cleaner_backoff = Duration::from_millis(100);
    })
    .await;
    let bs = broker.bootstrap_servers();
    create_compacted(&bs, "kv", "4096").await;
    let mut model = Model::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        send(&bs, "kv", codec, &updates(50, 4, codec), &mut model).await;
    }
    // producers keep writing while the cleaner runs
    for round in 0..10 {
        send(
            &bs,
            "kv",
            "snappy",
            &updates(50, 1, &format!("live{round}")),
            &mut model,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let tombstones: Vec<(String, Option<String>)> =
        (0..10).map(|k| (format!("k{k:03}"), None)).collect();
    send(&bs, "kv", "lz4", &tombstones, &mut model).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // closes the tombstones' segment (segment.ms), so they are cleanable
    send(
        &bs,
        "kv",
        "none",
        &[("other".into(), Some("x".into()))],
        &mut model,
    )
    .await;
    let produced = model.len();
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        let seen = read_all(&bs, "kv").await;
        check(&seen, &model);
        let tombstones_left = seen.values().filter(|(_, v)| v.is_none()).count();
        if seen.len() <= 60 && tombstones_left == 0 {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {produced} records and {tombstones_left} tombstones left",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        !seen.values().any(|(k, _)| k == "k000"),
        "deleted keys are gone"
    );
    // kcat sees the same latest values
    let (ok, out, err) = kcat(
        &["-C", "-b", &bs, "-t", "kv", "-e", "-q", "-f", "%k=%s\n"],
        b"",
    );
    assert!(ok, "{err}");
    let by_kcat: HashMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(by_kcat, latest(&model));
    broker.shutdown().await.unwrap();
    let broker = start_broker(Some(dir.path())).await;
    assert_eq!(
        read_all(&broker.bootstrap_servers(), "kv").await,
        seen,
        "the same after a restart"
    );
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("logs").join("kv-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9_at_any_moment_of_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed();
    eprintln!("seed {rng}");
    let flags = ["--log-cleaner-backoff-ms", "20"];
    let mut model = Model::new();
    let mut maybe = HashSet::new();
    let mut created = false;
    let mut mid_swap_crashes = 0;
    for round in 0..8 {
        // every other round aborts between the swap's steps 2 and 3
        let failpoint: &[(&str, &str)] = if round % 2 == 1 {
            &[("FINSTREAM_FAILPOINT", "compaction-mid-swap")]
        } else {
            &[]
        };
        let mut broker = BinaryBroker::start_env(dir.path(), &flags, failpoint);
        let bs = broker.addr.clone();
        if !created {
            create_compacted(&bs, "kv", "2048").await;
            created = true;
        }
        check_maybe(&read_all(&bs, "kv").await, &model, &maybe);
        let tag = format!("r{round}");
        let pairs = updates(40, 3, &tag);
        if failpoint.is_empty() {
            send(&bs, "kv", "gzip", &pairs, &mut model).await;
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            tokio::time::sleep(Duration::from_millis(50 + (rng >> 33) % 400)).await;
            broker.kill9();
        } else {
            // sends fail once the process aborts: only acknowledged ones count
            let p = producer(
                &bs,
                &[("compression.type", "zstd"), ("message.timeout.ms", "3000")],
            );
            for (k, v) in &pairs {
                maybe.insert((k.clone(), v.clone()));
                let r = FutureRecord::to("kv")
                    .partition(0)
                    .key(k.as_str())
                    .payload(v.as_deref().unwrap_or(""));
                match p.send(r, Duration::from_secs(3)).await {
                    Ok(d) => {
                        model.insert(d.offset, (k.clone(), v.clone()));
                    }
                    Err(_) => break,
                }
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while broker.child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if broker.child.try_wait().unwrap().is_some() {
                mid_swap_crashes += 1;
            }
            broker.kill9();
        }
    }
    assert!(
        mid_swap_crashes >= 2,
        "the failpoint was reached {mid_swap_crashes} times"
    );
    let broker = BinaryBroker::start_with(dir.path(), &flags);
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    let seen = read_all(&broker.addr, "kv").await;
    check_maybe(&seen, &model, &maybe);
    assert!(
        seen.len() < model.len(),
        "compaction ran: {} of {}",
        seen.len(),
        model.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_refuses_records_without_a_key() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    create_compacted(&bs, "keyed", "100000").await;
    let p = producer(&bs, &[("retries", "0")]);
    let keyless = p
        .send(FutureRecord::<(), _>::to("keyed").payload("no key"), WAIT)
        .await;
    let err = keyless.map_err(|(e, _)| e).expect_err("refused");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord),
        "{err}"
    );
    let keyed = p
        .send(FutureRecord::to("keyed").key("k").payload("v"), WAIT)
        .await;
    assert!(keyed.is_ok(), "{keyed:?}");
    // in one batch: the keyless records are named, the others fail with them (KIP-467)
    let batched = producer(&bs, &[("retries", "0"), ("linger.ms", "200")]);
    let mut pending = Vec::new();
    for i in 0..6 {
        let r = FutureRecord::<str, str>::to("keyed")
            .partition(0)
            .payload("v");
        let r = if i % 3 == 0 { r } else { r.key("k") };
        pending.push(batched.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    let mut invalid = 0;
    for d in pending {
        let err = d
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect_err("the whole batch fails");
        if err.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord) {
            invalid += 1;
        }
    }
    assert_eq!(invalid, 2, "the two keyless records are the invalid ones");
}

/// The threads of this process with this name.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Shutdown stops the log cleaner's thread before it returns, so nothing of the broker
/// holds the data directory afterwards (no sweep of a stopped broker's logs racing a new
/// broker on the same directory): a broker started on it at once opens it, over and over,
/// as a test suite restarting its broker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_cleaner_so_the_directory_reopens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let config = finstream_broker::BrokerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: Some(dir.path().to_path_buf()),
            log_cleaner_backoff: Duration::from_millis(20),
            ..finstream_broker::BrokerConfig::default()
        };
        let broker = finstream_broker::start(config)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the directory did not reopen: {e}"));
        let cleaner = format!("cleaner-{}", broker.local_addr().port());
        // The thread names itself once it runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while threads_named(&cleaner) == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(threads_named(&cleaner), 1, "round {round}: {cleaner} runs");
        broker.ensure_topic("t").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        broker.shutdown().await.unwrap();
        assert_eq!(
            threads_named(&cleaner),
            0,
            "round {round}: {cleaner} outlived shutdown"
        );
    }
}
