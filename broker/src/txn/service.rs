//! The transaction coordinator's home: the state machine behind a mutex, its state stored as
//! one metadata record per transactional id (`txn/<id>`), written at every change and made
//! durable by the flush the API answers after, and the wall clock it is driven by.
//!
//! The mutex also orders transactional appends against the end of their transaction: a
//! transactional batch is checked and appended while it is held (see
//! [`TxnService::lock`]), and EndTxn moves the transaction to `Prepare*` while it is held,
//! so no batch of a transaction lands after its markers.

use std::sync::{Arc, Mutex, MutexGuard};

use super::coordinator::{TxnConfig, TxnCoordinator};
use super::types::{Millis, TxnMeta};
use crate::error::StorageError;
use crate::storage::Store;

const TXN_PREFIX: &[u8] = b"txn/";

fn key(id: &str) -> Vec<u8> {
    let mut k = TXN_PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// The milliseconds since the Unix epoch (transaction start times survive restarts).
pub fn wall_clock() -> Millis {
    crate::clock::now_ms().max(0) as Millis
}

/// The coordinator and its store.
pub struct TxnService {
    store: Arc<dyn Store>,
    coordinator: Mutex<TxnCoordinator>,
}

impl TxnService {
    /// Recovers every transactional id's state from `store`.
    pub fn recover(store: Arc<dyn Store>, config: TxnConfig) -> Result<Self, StorageError> {
        let mut recovered = Vec::new();
        for (k, v) in store.meta_scan(TXN_PREFIX)? {
            let id = String::from_utf8_lossy(&k[TXN_PREFIX.len()..]).into_owned();
            let meta = TxnMeta::decode(&v).ok_or_else(|| StorageError::Corrupt {
                what: format!("transaction state of {id:?}"),
                detail: format!("{} bytes that do not parse", v.len()),
            })?;
            recovered.push((id, meta));
        }
        if !recovered.is_empty() {
            tracing::info!(
                transactional_ids = recovered.len(),
                "recovered transactions"
            );
        }
        Ok(TxnService {
            store,
            coordinator: Mutex::new(TxnCoordinator::new(config, recovered)),
        })
    }

    /// The coordinator, locked. Hold it only for state changes and transactional appends.
    pub fn lock(&self) -> MutexGuard<'_, TxnCoordinator> {
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the state of `id` as `coordinator` holds it (durable with the next flush).
    pub fn persist(&self, coordinator: &TxnCoordinator, id: &str) -> Result<(), StorageError> {
        match coordinator.get(id) {
            Some(meta) => self.store.meta_put(&key(id), &meta.encode()),
            None => self.store.meta_remove(&key(id)),
        }
    }
}
