//! The transactional part of the power-cut workload: a transactional producer commits (and
//! every fourth time aborts) transactions of 6 records over 2 partitions until the power
//! goes. After the cut, once a new producer with the same `transactional.id` has fenced the
//! old one, a read_committed reader must see:
//! * every transaction whose commit was acknowledged, whole;
//! * no record of a transaction whose abort was acknowledged, or that never asked to commit;
//! * a transaction whose commit was under way at the cut whole or not at all;
//! * no record twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

use crate::common::{assigned_consumer, client_config};

pub const TOPIC: &str = "pctx";
const ID: &str = "pc-txn";
const RECORDS: usize = 6;

/// What the transactional producer did, over all cycles.
#[derive(Default)]
pub struct Txns {
    /// Transaction name -> its records, recorded before they are sent.
    pub values: HashMap<String, Vec<String>>,
    /// Commit asked (the answer may not have come).
    pub commit_asked: HashSet<String>,
    /// Commit acknowledged.
    pub committed: HashSet<String>,
    /// Abort acknowledged.
    pub aborted: HashSet<String>,
}

fn txn_producer(addr: &str) -> Option<BaseProducer> {
    let mut c = client_config(addr);
    c.set("transactional.id", ID)
        .set("transaction.timeout.ms", "5000")
        .set("message.timeout.ms", "3000")
        .set("linger.ms", "1");
    let p: BaseProducer = c.create().ok()?;
    p.init_transactions(Duration::from_secs(5)).ok()?;
    Some(p)
}

/// Waits (at most 5 s) until every record sent is acknowledged or failed.
fn drain(p: &BaseProducer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.in_flight_count() > 0 && Instant::now() < deadline {
        p.poll(Duration::from_millis(1));
    }
}

/// Transactions `c<cycle>-t<n>` until the broker is gone or `stop`.
pub fn load(addr: String, cycle: usize, stop: Arc<AtomicBool>, txns: Arc<Mutex<Txns>>) {
    let Some(p) = txn_producer(&addr) else {
        return;
    };
    for n in 0.. {
        if stop.load(Ordering::Relaxed) || p.begin_transaction().is_err() {
            return;
        }
        let name = format!("c{cycle}-t{n}");
        let values: Vec<String> = (0..RECORDS).map(|k| format!("{name}-{k}")).collect();
        txns.lock()
            .unwrap()
            .values
            .insert(name.clone(), values.clone());
        for (k, v) in values.iter().enumerate() {
            let record = BaseRecord::<(), _>::to(TOPIC)
                .partition((k % 2) as i32)
                .payload(v);
            if p.send(record).is_err() {
                return;
            }
        }
        drain(&p);
        if n % 4 == 3 {
            if p.abort_transaction(Duration::from_secs(5)).is_err() {
                return;
            }
            txns.lock().unwrap().aborted.insert(name);
        } else {
            txns.lock().unwrap().commit_asked.insert(name.clone());
            if p.commit_transaction(Duration::from_secs(5)).is_err() {
                return;
            }
            txns.lock().unwrap().committed.insert(name);
        }
    }
}

/// Values read until 2 s pass with nothing new.
async fn read_committed(addr: &str) -> Vec<String> {
    let consumer: StreamConsumer = assigned_consumer(
        addr,
        TOPIC,
        2,
        &[
            ("isolation.level", "read_committed"),
            ("check.crcs", "true"),
        ],
    );
    let mut out = Vec::new();
    while let Ok(msg) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        let msg = msg.expect("consume");
        out.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
    }
    out
}

/// The checks listed in the module docs, after a cut.
pub async fn check(addr: &str, txns: &Txns, cycle: usize) {
    // The new producer fences the killed one and aborts what it left open.
    let fenced = tokio::task::block_in_place(|| txn_producer(addr));
    assert!(
        fenced.is_some(),
        "cycle {cycle}: InitProducerId for {ID} failed"
    );
    drop(fenced);
    let values = read_committed(addr).await;
    let mut by_txn: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for v in &values {
        assert!(seen.insert(v), "cycle {cycle}: {v} read twice");
        let txn = v.rsplit_once('-').map_or(v.as_str(), |(t, _)| t);
        by_txn.entry(txn).or_default().push(v);
    }
    for (txn, got) in &by_txn {
        assert!(
            txns.commit_asked.contains(*txn),
            "cycle {cycle}: {txn} visible but it never asked to commit (aborted: {})",
            txns.aborted.contains(*txn)
        );
        assert_eq!(
            got.len(),
            RECORDS,
            "cycle {cycle}: {txn} partly visible: {got:?}"
        );
    }
    for txn in &txns.committed {
        assert!(
            by_txn.contains_key(txn.as_str()),
            "cycle {cycle}: committed (acknowledged) transaction {txn} lost"
        );
    }
}
