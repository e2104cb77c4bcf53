//! Topic configs, sans-io: the catalog of the configs a topic may set (name, type, how a
//! value is checked, where its default comes from), a topic's overrides and their stored
//! form, and the changes IncrementalAlterConfigs asks for.
//!
//! Applied by the broker: `retention.ms`, `retention.bytes` (retention), `cleanup.policy`,
//! `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`, `delete.retention.ms`
//! (compaction), `segment.bytes`, `segment.ms` (rolling) and `max.message.bytes`
//! (produce). The others (`compression.type`, `message.timestamp.type`,
//! `min.insync.replicas`, `message.format.version`) are validated, stored and described,
//! but not acted on.

use std::collections::BTreeMap;

use crate::config::BrokerConfig;

/// ConfigType values of DescribeConfigs.
pub mod kind {
    /// A string.
    pub const STRING: i8 = 2;
    /// An int.
    pub const INT: i8 = 3;
    /// A long.
    pub const LONG: i8 = 5;
    /// A double.
    pub const DOUBLE: i8 = 6;
    /// A comma-separated list.
    pub const LIST: i8 = 7;
}

/// A topic's overrides: name -> value.
pub type Overrides = BTreeMap<String, String>;

/// One config of the catalog.
pub struct Spec {
    /// Its name.
    pub name: &'static str,
    /// Its ConfigType.
    pub kind: i8,
    /// Checks a value; the error says what is allowed.
    check: fn(&str) -> Result<(), String>,
    /// Its value when the topic does not set it.
    default: DefaultFrom,
}

/// Where a config's default comes from.
enum DefaultFrom {
    /// Kafka's own default.
    Fixed(&'static str),
    /// A broker flag.
    Broker(fn(&BrokerConfig) -> String),
}

impl DefaultFrom {
    /// The value, and whether it comes from a broker flag.
    fn value(&self, broker: &BrokerConfig) -> (String, bool) {
        match self {
            DefaultFrom::Fixed(v) => ((*v).to_string(), false),
            DefaultFrom::Broker(f) => (f(broker), true),
        }
    }
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("must be a whole number of at least {min}")),
    }
}

fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<(), String> {
    move |v| {
        if allowed.contains(&v) {
            Ok(())
        } else {
            Err(format!("must be one of {}", allowed.join(", ")))
        }
    }
}

fn policy(v: &str) -> Result<(), String> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if !items.is_empty() && items.iter().all(|i| matches!(*i, "delete" | "compact")) {
        Ok(())
    } else {
        Err("must be delete, compact or compact,delete".into())
    }
}

fn ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// Every topic config this broker knows.
pub fn catalog() -> Vec<Spec> {
    vec![
        Spec {
            name: "cleanup.policy",
            kind: kind::LIST,
            check: policy,
            default: DefaultFrom::Fixed("delete"),
        },
        Spec {
            name: "compression.type",
            kind: kind::STRING,
            check: |v| one_of(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"])(v),
            default: DefaultFrom::Fixed("producer"),
        },
        Spec {
            name: "delete.retention.ms",
            kind: kind::LONG,
            check: |v| long_at_least(0)(v),
            default: DefaultFrom::Fixed("86400000"),
        },
        Spec {
            name: "max.message.bytes",
            kind: kind::INT,
            check: |v| long_at_least(0)(v),
            default: DefaultFrom::Broker(|c| c.max_message_bytes.to_string()),
        },
        Spec {
            // Deprecated in Kafka 3.0 and ignored there (RecordBatch v2 is always used),
            // gone in 4.0; accepted so tools written for 2.x/3.x can still set it.
            name: "message.format.version",
            kind: kind::STRING,
            check: |v| {
                if !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                {
                    Ok(())
                } else {
                    Err("must be a Kafka version such as 0.10.0 or 3.0-IV1".into())
                }
            },
            default: DefaultFrom::Fixed("3.0-IV1"),
        },
        Spec {
            name: "message.timestamp.type",
            kind: kind::STRING,
            check: |v| one_of(&["CreateTime", "LogAppendTime"])(v),
            default: DefaultFrom::Fixed("CreateTime"),
        },
        Spec {
            name: "min.cleanable.dirty.ratio",
            kind: kind::DOUBLE,
            check: ratio,
            default: DefaultFrom::Fixed("0.5"),
        },
        Spec {
            name: "min.compaction.lag.ms",
            kind: kind::LONG,
            check: |v| long_at_least(0)(v),
            default: DefaultFrom::Fixed("0"),
        },
        Spec {
            name: "min.insync.replicas",
            kind: kind::INT,
            check: |v| long_at_least(1)(v),
            default: DefaultFrom::Fixed("1"),
        },
        Spec {
            name: "retention.bytes",
            kind: kind::LONG,
            check: |v| long_at_least(-1)(v),
            default: DefaultFrom::Broker(|c| {
                c.log_retention_bytes.map_or(-1, |b| b as i64).to_string()
            }),
        },
        Spec {
            name: "retention.ms",
            kind: kind::LONG,
            check: |v| long_at_least(-1)(v),
            default: DefaultFrom::Broker(|c| {
                c.log_retention
                    .map_or(-1, |d| d.as_millis() as i64)
                    .to_string()
            }),
        },
        Spec {
            name: "segment.bytes",
            kind: kind::INT,
            check: |v| long_at_least(14)(v),
            default: DefaultFrom::Broker(|c| c.segment_bytes.to_string()),
        },
        Spec {
            name: "segment.ms",
            kind: kind::LONG,
            check: |v| long_at_least(1)(v),
            default: DefaultFrom::Broker(|c| {
                c.log_roll
                    .map_or(i64::MAX, |d| d.as_millis() as i64)
                    .to_string()
            }),
        },
    ]
}

/// Checks `value` for config `name`; the error is INVALID_CONFIG's message.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let spec = catalog()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown topic config {name:?}"))?;
    (spec.check)(value).map_err(|why| format!("invalid value {value:?} for {name}: {why}"))
}

/// One described config: name, value, whether the topic sets it, whether the default
/// comes from a broker flag, and its type.
pub struct Described {
    /// Name.
    pub name: &'static str,
    /// Effective value.
    pub value: String,
    /// Set on the topic (DYNAMIC_TOPIC_CONFIG).
    pub overridden: bool,
    /// The default comes from a broker flag (STATIC_BROKER_CONFIG, else DEFAULT_CONFIG).
    pub from_broker: bool,
    /// ConfigType.
    pub kind: i8,
}

/// Every config of a topic with `overrides`, in name order.
pub fn describe(broker: &BrokerConfig, overrides: &Overrides) -> Vec<Described> {
    catalog()
        .into_iter()
        .map(|s| {
            let (default, from_broker) = s.default.value(broker);
            let set = overrides.get(s.name);
            Described {
                name: s.name,
                value: set.cloned().unwrap_or(default),
                overridden: set.is_some(),
                from_broker,
                kind: s.kind,
            }
        })
        .collect()
}

/// An IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the value.
    Set(String, String),
    /// Back to the default.
    Delete(String),
    /// Add items to a list.
    Append(String, String),
    /// Remove items from a list.
    Subtract(String, String),
}

/// `current` after `ops`, every resulting value checked; or INVALID_CONFIG's message.
pub fn apply(broker: &BrokerConfig, current: &Overrides, ops: &[Op]) -> Result<Overrides, String> {
    let mut next = current.clone();
    for op in ops {
        match op {
            Op::Set(k, v) => {
                validate(k, v)?;
                next.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                validate_name(k)?;
                next.remove(k);
            }
            Op::Append(k, items) | Op::Subtract(k, items) => {
                let spec = catalog().into_iter().find(|s| s.name == k);
                let spec = spec.ok_or_else(|| format!("unknown topic config {k:?}"))?;
                if spec.kind != kind::LIST {
                    return Err(format!(
                        "{k} is not a list: APPEND and SUBTRACT do not apply"
                    ));
                }
                let base = next
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| spec.default.value(broker).0);
                let mut list: Vec<String> = base
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if matches!(op, Op::Append(..)) {
                        if !list.iter().any(|l| l == item) {
                            list.push(item.to_string());
                        }
                    } else {
                        list.retain(|l| l != item);
                    }
                }
                let value = list.join(",");
                validate(k, &value)?;
                next.insert(k.clone(), value);
            }
        }
    }
    Ok(next)
}

fn validate_name(name: &str) -> Result<(), String> {
    if catalog().iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(format!("unknown topic config {name:?}"))
    }
}

/// The stored form: `name=value` lines (names hold no `=`, values no newline).
pub fn encode(overrides: &Overrides) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in overrides {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out.into_bytes()
}

/// Parses [`encode`]'s output; `None` if malformed.
pub fn decode(b: &[u8]) -> Option<Overrides> {
    let text = std::str::from_utf8(b).ok()?;
    text.lines()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_like_kafka() {
        assert!(validate("retention.ms", "3600000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "forever").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        // accepted and ignored, as Kafka 3.x does (librdkafka's 0092 sets it)
        assert!(validate("message.format.version", "0.10.0.0").is_ok());
        assert!(validate("message.format.version", "").is_err());
        let e = validate("no.such.config", "1").unwrap_err();
        assert!(e.contains("unknown topic config"), "{e}");
    }

    #[test]
    fn incremental_changes_set_delete_append_and_subtract() {
        let broker = BrokerConfig::default();
        let next = apply(
            &broker,
            &Overrides::new(),
            &[
                Op::Set("retention.ms".into(), "1000".into()),
                Op::Append("cleanup.policy".into(), "compact".into()),
            ],
        )
        .unwrap();
        assert_eq!(next.get("cleanup.policy").unwrap(), "delete,compact");
        let next = apply(
            &broker,
            &next,
            &[
                Op::Subtract("cleanup.policy".into(), "delete".into()),
                Op::Delete("retention.ms".into()),
            ],
        )
        .unwrap();
        assert_eq!(next.get("cleanup.policy").unwrap(), "compact");
        assert!(!next.contains_key("retention.ms"));
        assert!(apply(
            &broker,
            &next,
            &[Op::Append("retention.ms".into(), "1".into())]
        )
        .is_err());
        assert!(apply(
            &broker,
            &next,
            &[Op::Subtract("cleanup.policy".into(), "compact".into())]
        )
        .is_err());
        let described = describe(&broker, &next);
        let policy = described
            .iter()
            .find(|d| d.name == "cleanup.policy")
            .unwrap();
        assert!(policy.overridden);
        let retention = described.iter().find(|d| d.name == "retention.ms").unwrap();
        assert_eq!(
            (
                retention.value.as_str(),
                retention.overridden,
                retention.from_broker
            ),
            ("604800000", false, true)
        );
        assert_eq!(decode(&encode(&next)), Some(next));
    }
}
