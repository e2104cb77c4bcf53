//! Sends in Kafka transactions (`finstream produce --transactional-id`): every
//! `--transaction-rows` rows (default: the whole file), good rows and dead letters alike,
//! are one transaction, committed once all of them are acknowledged. An interrupted,
//! given-up or failed run aborts its open transaction, so read_committed readers (such as
//! `finstream consume`) see each transaction's rows entirely or not at all.
//!
//! A new run with the same `transactional.id` fences any earlier producer still alive and
//! aborts the transaction it left open (the broker's transaction coordinator does it on
//! `init_transactions`).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;

use crate::pipeline::ProduceConfig;
use crate::sink::{Delivered, KafkaSink, Sink};
use crate::stats::Stats;

/// A [`KafkaSink`] in transactions.
pub struct TransactionalSink {
    inner: KafkaSink,
    rows_per_txn: u64,
    in_txn: u64,
    /// Counts of the committed transactions.
    committed: Delivered,
    /// Set once a transaction failed: nothing more is sent.
    broken: Option<String>,
}

impl TransactionalSink {
    /// A transactional producer, initialised (fencing earlier producers of the same id),
    /// with its first transaction begun.
    pub fn new(cfg: &ProduceConfig) -> Result<TransactionalSink, KafkaError> {
        let inner = KafkaSink::new(cfg)?;
        inner.producer().init_transactions(Timeout::Never)?;
        inner.producer().begin_transaction()?;
        tracing::info!(
            transactional_id = cfg.transactional_id.as_deref().unwrap_or_default(),
            rows_per_transaction = cfg.transaction_rows,
            "sending in transactions"
        );
        Ok(TransactionalSink {
            inner,
            rows_per_txn: cfg.transaction_rows.unwrap_or(u64::MAX).max(1),
            in_txn: 0,
            committed: Delivered::default(),
            broken: None,
        })
    }

    /// Commits the open transaction (librdkafka flushes first); the counts so far become
    /// the committed ones.
    fn commit(&mut self) -> Result<(), KafkaError> {
        let p = self.inner.producer();
        // The rdkafka crate's flush, which commit_transaction starts with, waits in whole
        // 100 ms rounds; the producer's poll thread serves the delivery reports meanwhile,
        // so waiting for them here in 1 ms steps leaves the flush nothing to wait for.
        while p.in_flight_count() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        p.commit_transaction(Timeout::Never)?;
        let now = self.inner.delivered();
        self.committed.sent = now.sent;
        self.committed.dead_lettered = now.dead_lettered;
        self.in_txn = 0;
        tracing::debug!(rows = now.sent + now.dead_lettered, "transaction committed");
        Ok(())
    }

    /// Counts a row into the open transaction; commits it and begins the next when full.
    fn counted(&mut self, sent: Result<(), KafkaError>) -> Result<(), KafkaError> {
        sent?;
        self.in_txn += 1;
        if self.in_txn >= self.rows_per_txn {
            let next = self
                .commit()
                .and_then(|()| self.inner.producer().begin_transaction());
            if let Err(e) = &next {
                tracing::error!("transaction failed, nothing more is sent: {e}");
                self.broken = Some(e.to_string());
                let _ = self.inner.producer().abort_transaction(Timeout::Never);
            }
            next?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), KafkaError> {
        match &self.broken {
            Some(_) => Err(KafkaError::MessageProduction(RDKafkaErrorCode::State)),
            None => Ok(()),
        }
    }
}

impl Sink for TransactionalSink {
    fn message(&mut self, line: u64, json: &str) -> Result<(), KafkaError> {
        self.check()?;
        let sent = self.inner.message(line, json);
        self.counted(sent)
    }

    fn dead_letter(&mut self, line: u64, raw: Vec<u8>, error: &str) -> Result<(), KafkaError> {
        self.check()?;
        let sent = self.inner.dead_letter(line, raw, error);
        self.counted(sent)
    }

    fn publish(&self, stats: &Stats) {
        self.inner.publish(stats);
    }

    /// Commits the last transaction if the run is complete, else aborts it. Rows of
    /// aborted transactions count as not delivered.
    fn finish(mut self: Box<Self>, complete: bool) -> Result<Delivered, KafkaError> {
        if complete && self.broken.is_none() {
            self.commit()?;
        } else if self.broken.is_none() {
            tracing::warn!(
                rows = self.in_txn,
                "run incomplete: aborting the open transaction"
            );
            self.inner.producer().abort_transaction(Timeout::Never)?;
        }
        let all = self.inner.delivered();
        let uncommitted = (all.sent + all.dead_lettered)
            .saturating_sub(self.committed.sent + self.committed.dead_lettered);
        Ok(Delivered {
            sent: self.committed.sent,
            dead_lettered: self.committed.dead_lettered,
            failed: all.failed
                + if complete || self.broken.is_some() {
                    uncommitted
                } else {
                    0
                },
        })
    }
}
