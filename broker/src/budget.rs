//! A broker-wide budget for the memory of requests being read and decoded (Kafka's
//! `queued.max.request.bytes`, Redpanda's memory-based admission).
//!
//! Before a connection allocates a request's body it takes the request's size plus an
//! allowance for its decoded structures from the budget, and gives it back once the
//! request is decoded and applied. While the budget is short, the connection waits (its
//! bytes stay in the socket, which pushes back on the client) instead of allocating past
//! it. Waiters are not served in order: a small request goes ahead of a large one that is
//! still waiting, so a few hostile 100 MB requests cannot hold up every other client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The budget shared by every connection.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    available: Mutex<usize>,
    freed: Notify,
    /// Times a request had to wait for budget.
    pub waits: AtomicU64,
}

/// Bytes taken from a [`MemoryBudget`], returned when dropped.
#[derive(Debug)]
pub struct Grant {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

/// Decoded structures may take this many times the request's size...
const DECODE_FACTOR: usize = 8;
/// ...but at least this much (small requests)...
const MIN_DECODE_ALLOWANCE: usize = 64 * 1024;
/// ...and at most this much (a large Produce is mostly record bytes, which stay in the
/// request buffer rather than being copied).
const MAX_DECODE_ALLOWANCE: usize = 32 * 1024 * 1024;

/// How many bytes a request of `len` bytes may allocate while it is decoded.
pub fn decode_allowance(len: usize) -> usize {
    len.saturating_mul(DECODE_FACTOR)
        .clamp(MIN_DECODE_ALLOWANCE, MAX_DECODE_ALLOWANCE)
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            available: Mutex::new(total),
            freed: Notify::new(),
            waits: AtomicU64::new(0),
        })
    }

    /// The whole budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.total - self.available.lock().map_or(0, |a| *a)
    }

    /// Takes `bytes` (at most the whole budget, so any single request can proceed alone),
    /// waiting until they are free.
    pub async fn acquire(self: &Arc<Self>, bytes: usize) -> Grant {
        let bytes = bytes.min(self.total);
        let mut waited = false;
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(bytes) {
                return Grant {
                    budget: self.clone(),
                    bytes,
                };
            }
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            freed.await;
        }
    }

    fn try_take(&self, bytes: usize) -> bool {
        match self.available.lock() {
            Ok(mut a) if *a >= bytes => {
                *a -= bytes;
                true
            }
            _ => false,
        }
    }

    fn give_back(&self, bytes: usize) {
        if let Ok(mut a) = self.available.lock() {
            *a = (*a + bytes).min(self.total);
        }
        self.freed.notify_waiters();
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_budget_and_small_requests_pass_large_waiters() {
        let budget = MemoryBudget::new(100);
        let a = budget.acquire(60).await;
        assert_eq!(budget.in_use(), 60);
        // A large request waits...
        let b = budget.clone();
        let large = tokio::spawn(async move { b.acquire(80).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!large.is_finished());
        // ...while a small one that fits goes ahead of it.
        let small = tokio::time::timeout(Duration::from_secs(1), budget.acquire(30))
            .await
            .expect("a small request is not queued behind a large one");
        drop(small);
        drop(a);
        let large = tokio::time::timeout(Duration::from_secs(1), large)
            .await
            .expect("the large one proceeds once memory is free")
            .unwrap();
        assert_eq!(budget.in_use(), 80);
        drop(large);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.waits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_proceeds_alone() {
        let budget = MemoryBudget::new(100);
        let g = budget.acquire(1000).await;
        assert_eq!(budget.in_use(), 100);
        drop(g);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn decode_allowance_is_proportional_within_bounds() {
        assert_eq!(decode_allowance(10), MIN_DECODE_ALLOWANCE);
        assert_eq!(decode_allowance(1 << 20), 8 << 20);
        assert_eq!(decode_allowance(100 << 20), MAX_DECODE_ALLOWANCE);
    }
}
