//! Topic config overrides kept in the store, one metadata record per topic
//! (`topic_config/<name>`, durable with the next flush), and the values the broker applies
//! from them: `max.message.bytes` on produce, `retention.ms` and `retention.bytes` in
//! retention.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::StorageError;
use crate::retention::Limits;
use crate::storage::Store;
use crate::topic_config::{self, Overrides};

const PREFIX: &[u8] = b"topic_config/";

fn key(topic: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

/// Every topic's overrides.
pub struct TopicConfigStore {
    store: Arc<dyn Store>,
    map: RwLock<HashMap<String, Overrides>>,
}

impl TopicConfigStore {
    /// Reads every topic's overrides from `store`.
    pub fn recover(store: Arc<dyn Store>) -> Result<Self, StorageError> {
        let mut map = HashMap::new();
        for (k, v) in store.meta_scan(PREFIX)? {
            let topic = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            let overrides = topic_config::decode(&v).ok_or_else(|| StorageError::Corrupt {
                what: format!("configs of topic {topic:?}"),
                detail: format!("{} bytes that do not parse", v.len()),
            })?;
            map.insert(topic, overrides);
        }
        Ok(TopicConfigStore {
            store,
            map: RwLock::new(map),
        })
    }

    /// The overrides of `topic` (empty when it sets none).
    pub fn get(&self, topic: &str) -> Overrides {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(topic).cloned().unwrap_or_default()
    }

    /// Replaces the overrides of `topic` (stored; durable with the next flush).
    pub fn set(&self, topic: &str, overrides: Overrides) -> Result<(), StorageError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if overrides.is_empty() {
            self.store.meta_remove(&key(topic))?;
            map.remove(topic);
        } else {
            self.store
                .meta_put(&key(topic), &topic_config::encode(&overrides))?;
            map.insert(topic.to_string(), overrides);
        }
        Ok(())
    }

    fn value<T: std::str::FromStr>(&self, topic: &str, name: &str) -> Option<T> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(topic)?.get(name)?.trim().parse().ok()
    }

    /// `max.message.bytes` of `topic`, or `default`.
    pub fn max_message_bytes(&self, topic: &str, default: usize) -> usize {
        self.value(topic, "max.message.bytes").unwrap_or(default)
    }

    /// Whether `topic`'s `cleanup.policy` holds `item` (`delete` by default).
    fn policy_has(&self, topic: &str, item: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(topic)
            .and_then(|o| o.get("cleanup.policy"))
            .map_or(item == "delete", |p| p.split(',').any(|i| i.trim() == item))
    }

    /// Whether retention deletes old segments of `topic` (`cleanup.policy` has `delete`).
    pub fn deletes(&self, topic: &str) -> bool {
        self.policy_has(topic, "delete")
    }

    /// The compaction settings of `topic`, if its `cleanup.policy` has `compact`.
    pub fn compaction(&self, topic: &str) -> Option<crate::cleaner::Policy> {
        self.policy_has(topic, "compact")
            .then(|| crate::cleaner::Policy {
                min_dirty_ratio: self
                    .value(topic, "min.cleanable.dirty.ratio")
                    .unwrap_or(0.5),
                min_lag_ms: self.value(topic, "min.compaction.lag.ms").unwrap_or(0),
                delete_retention_ms: self
                    .value(topic, "delete.retention.ms")
                    .unwrap_or(86_400_000),
            })
    }

    /// `segment.bytes` and `segment.ms` of `topic`, else the broker's.
    pub fn roll_limits(
        &self,
        topic: &str,
        broker: &crate::config::BrokerConfig,
    ) -> (u64, Option<i64>) {
        let bytes = self
            .value(topic, "segment.bytes")
            .unwrap_or(broker.segment_bytes);
        let ms = self
            .value::<i64>(topic, "segment.ms")
            .or_else(|| broker.log_roll.map(|d| d.as_millis() as i64));
        (bytes, ms)
    }

    /// The retention limits of `topic`: its `retention.ms` and `retention.bytes` (-1: none),
    /// else the broker's.
    pub fn retention(&self, topic: &str, broker: Limits) -> Limits {
        let ms: Option<i64> = self.value(topic, "retention.ms");
        let bytes: Option<i64> = self.value(topic, "retention.bytes");
        Limits {
            max_age_ms: ms.map_or(broker.max_age_ms, |v| (v >= 0).then_some(v)),
            max_bytes: bytes.map_or(broker.max_bytes, |v| u64::try_from(v).ok()),
        }
    }
}
