//! The console's JSON API: `/api/topics`, `/api/messages`, `/api/dead-letters`,
//! `/api/groups` and `/api/series` (the live charts). Shapes are documented in the README.

use serde_json::{json, Value};

use finstream_broker::{Record, Start};

use super::data::{self, broker};
use super::text::bytes_as_text;
use super::{Console, Query, Refusal, Response};

/// Answers `/api/<name>`, or `None` for an unknown name.
pub async fn route(console: &Console, name: &str, q: &Query) -> Option<Result<Response, Refusal>> {
    let body = match name {
        "topics" => topics(console),
        "messages" => messages(console, q),
        "dead-letters" => dead_letters(console, q).await,
        "groups" => groups(console),
        "series" => Ok(series(console)),
        _ => return None,
    };
    Some(body.map(|v| Response::ok("application/json", v.to_string())))
}

fn topics(console: &Console) -> Result<Value, Refusal> {
    let topics: Vec<Value> = broker(console)?
        .topics()
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "id": t.id.to_string(),
                "partitions": t.partitions.iter().map(|p| json!({
                    "partition": p.index,
                    "start_offset": p.log_start,
                    "end_offset": p.high_watermark,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "topics": topics }))
}

/// `value` and `value_encoding` (or `key`, `key_encoding`...) of optional bytes.
fn bytes_fields(obj: &mut serde_json::Map<String, Value>, name: &str, b: Option<&[u8]>) {
    let (v, enc) = match b {
        Some(b) => {
            let (t, enc) = bytes_as_text(b);
            (Value::String(t), Value::String(enc.into()))
        }
        None => (Value::Null, Value::Null),
    };
    obj.insert(name.into(), v);
    obj.insert(format!("{name}_encoding"), enc);
}

fn record_json(r: &Record) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("offset".into(), r.offset.into());
    o.insert("timestamp".into(), r.timestamp.into());
    bytes_fields(&mut o, "key", r.key.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            let mut h = serde_json::Map::new();
            h.insert("key".into(), k.clone().into());
            bytes_fields(&mut h, "value", v.as_deref());
            Value::Object(h)
        })
        .collect();
    o.insert("headers".into(), headers.into());
    bytes_fields(&mut o, "value", r.value.as_deref());
    Value::Object(o)
}

fn messages(console: &Console, q: &Query) -> Result<Value, Refusal> {
    let topic = q
        .get("topic")
        .ok_or_else(|| Refusal::BadRequest("topic= is required".into()))?;
    let (partition, page) = data::messages(console, topic, q, (Start::Offset(0), 100))?;
    Ok(json!({
        "topic": topic,
        "partition": partition,
        "start_offset": page.log_start,
        "end_offset": page.high_watermark,
        "from": page.from,
        "next_offset": page.next_offset,
        "messages": page.records.iter().map(record_json).collect::<Vec<_>>(),
    }))
}

async fn dead_letters(console: &Console, q: &Query) -> Result<Value, Refusal> {
    let limit = q.limit(100)?;
    let d = data::dead_letters(console, limit).await;
    let items: Vec<Value> = d
        .items
        .iter()
        .map(|d| {
            let mut o = serde_json::Map::new();
            o.insert("source".into(), d.source.into());
            o.insert("reason".into(), d.reason.clone().into());
            o.insert("location".into(), d.location.clone().into());
            bytes_fields(&mut o, "raw", Some(&d.raw));
            o.insert("timestamp".into(), d.timestamp.into());
            o.insert("kept_in".into(), d.kept_in.clone().into());
            Value::Object(o)
        })
        .collect();
    Ok(json!({ "dead_letters": items, "consumer_table_note": d.consumer_note }))
}

fn groups(console: &Console) -> Result<Value, Refusal> {
    let groups: Vec<Value> = broker(console)?
        .groups()
        .into_iter()
        .map(|g| {
            let lag: i64 = g.committed.iter().filter_map(|c| c.lag).sum();
            json!({
                "group": g.id,
                "state": g.state,
                "members": g.members,
                "lag": lag,
                "partitions": g.committed.iter().map(|c| json!({
                    "topic": c.topic,
                    "partition": c.partition,
                    "committed_offset": c.offset,
                    "end_offset": c.end_offset,
                    "lag": c.lag,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "groups": groups }))
}

/// The live charts as columns (uPlot's layout): times in seconds, then one array per
/// series, `null` where there is no value.
fn series(console: &Console) -> Value {
    let s = console.series.lock().unwrap_or_else(|e| e.into_inner());
    let points: Vec<_> = s.points().copied().collect();
    drop(s);
    json!({
        "window_seconds": super::series::WINDOW_MS / 1000,
        "t": points.iter().map(|p| p.t_ms as f64 / 1000.0).collect::<Vec<_>>(),
        "produced_per_s": points.iter().map(|p| p.produced_per_s).collect::<Vec<_>>(),
        "loaded_per_s": points.iter().map(|p| p.loaded_per_s).collect::<Vec<_>>(),
        "lag": points.iter().map(|p| p.lag).collect::<Vec<_>>(),
        "produce_latency_ms": points.iter().map(|p| p.produce_latency_ms).collect::<Vec<_>>(),
    })
}
