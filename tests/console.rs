//! The web console of `finstream all-in-one --serve`: its JSON API as scripts use it, and
//! its pages in headless Chromium (tests/console/console_check.mjs, with playwright-core),
//! with hostile values that must show as text, dead letters from both sides and groups
//! with lag. `FINSTREAM_CONSOLE_SCREENSHOTS=DIR` keeps the screenshots (docs/console/).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOPIC: &str = "financial_transactions";

fn api(http: &str, path: &str) -> (u16, Value) {
    let (code, body) = http_get(http, path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, json)
}

/// Polls `path` until `check` accepts its JSON (or 60 s pass, failing with the last answer).
fn api_until(http: &str, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let accepts = |body: &str| serde_json::from_str(body).is_ok_and(|v| check(&v));
    let (_, body) = http_poll(http, path, Duration::from_secs(60), |_, b| accepts(b));
    assert!(accepts(&body), "{what}: {path} answered {body}");
    serde_json::from_str(&body).unwrap()
}

fn sources(v: &Value) -> Vec<&str> {
    v["dead_letters"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["source"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn console_api_and_pages_in_chromium() {
    let db = TestDb::new("console").await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(
        &csv,
        "Description,Amount\nCoffee shop,4.50\nRent payment,-1200\nBad amount,abc\nGroceries,55.10\n",
    )
    .unwrap();
    let mut cmd = Command::new(finstream_bin());
    cmd.args(["all-in-one", "--serve", "--listen", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0", "--database-url", &db.url])
        .arg("--csv")
        .arg(&csv)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (child, addrs) = spawn_reporting(&mut cmd, "all-in-one");
    let _child = KillOnDrop(child);
    let found = wait_for_addresses(&addrs, &["listen", "http"]);
    let (kafka, http) = (&found[0], &found[1]);

    let end_offset_is = |n: i64| {
        move |v: &Value| {
            v["topics"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["name"] == TOPIC
                        && t["partitions"][0]["start_offset"] == 0
                        && t["partitions"][0]["end_offset"] == n
                })
            })
        }
    };
    api_until(http, "/api/topics", "the three good rows", end_offset_is(3));

    // Hostile values straight onto the topic: a description, a key and a header that
    // hold markup (valid JSON, so loaded), and a poison message (dead-lettered).
    let hostile = br#"{"description":"<script>window.__xss=1</script>","amount":1.0}"#;
    let mut line = b"<img src=x onerror=\"window.__xss=2\">|".to_vec();
    line.extend_from_slice(hostile);
    line.extend_from_slice(b"\n");
    let (ok, _, err) = kcat(
        &[
            "-b",
            kafka,
            "-P",
            "-t",
            TOPIC,
            "-K|",
            "-H",
            "source_line=<b>9</b>",
        ],
        &line,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = kcat(
        &["-b", kafka, "-P", "-t", TOPIC],
        b"<svg onload=window.__xss=3>\n",
    );
    assert!(ok, "{err}");

    // /api/topics: the topic with its offsets (3 good rows + 2 by kcat).
    let topics = api_until(http, "/api/topics", "five records", end_offset_is(5));
    assert!(topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "financial_transactions.dlq"));

    // /api/messages from an offset, with text values, headers and base64 where not UTF-8.
    let (code, m) = api(
        http,
        &format!("/api/messages?topic={TOPIC}&partition=0&offset=3&limit=1"),
    );
    assert_eq!(code, 200, "{m}");
    let msg = &m["messages"][0];
    assert_eq!(msg["offset"], 3);
    assert_eq!(msg["key"], "<img src=x onerror=\"window.__xss=2\">");
    assert_eq!(msg["value"].as_str().unwrap().as_bytes(), hostile);
    assert_eq!(msg["value_encoding"], "text");
    assert_eq!(msg["headers"][0]["key"], "source_line");
    assert_eq!(msg["headers"][0]["value"], "<b>9</b>");
    assert_eq!(m["next_offset"], 4);
    // From a timestamp: the first record at or after it.
    let ts = msg["timestamp"].as_i64().unwrap();
    let (_, m) = api(
        http,
        &format!("/api/messages?topic={TOPIC}&timestamp={ts}&limit=1000"),
    );
    assert!(m["messages"][0]["offset"].as_i64().unwrap() <= 3, "{m}");
    assert!(m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["offset"] == 3));
    let (_, m) = api(
        http,
        &format!("/api/messages?topic={TOPIC}&timestamp={}", ts + 3_600_000),
    );
    assert_eq!(
        m["messages"],
        serde_json::json!([]),
        "nothing an hour later"
    );
    // Bounded and checked.
    let (code, e) = api(http, &format!("/api/messages?topic={TOPIC}&limit=1001"));
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("1000"), "{e}");
    assert_eq!(api(http, "/api/messages?topic=no.such.topic").0, 404);
    assert_eq!(
        api(http, &format!("/api/messages?topic={TOPIC}&offset=x")).0,
        400
    );
    assert_eq!(api(http, "/api/messages").0, 400);

    // /api/dead-letters: the bad CSV row (file:line) and the poison message (t/p/o).
    let dead = api_until(http, "/api/dead-letters?limit=10", "both sides", |v| {
        let s = sources(v);
        s.contains(&"producer") && s.contains(&"consumer")
    });
    let list = dead["dead_letters"].as_array().unwrap();
    let row = list.iter().find(|d| d["source"] == "producer").unwrap();
    assert_eq!(row["location"], "in.csv:4", "{dead}");
    assert_eq!(row["raw"], "Bad amount,abc", "{dead}");
    assert!(row["reason"].as_str().unwrap().contains("Amount"), "{dead}");
    let poison = list.iter().find(|d| d["source"] == "consumer").unwrap();
    assert_eq!(poison["location"], format!("{TOPIC}/0/4"), "{dead}");
    assert_eq!(poison["raw"], "<svg onload=window.__xss=3>", "{dead}");
    assert_eq!(api(http, "/api/dead-letters?limit=0").0, 400);

    // /api/groups: our consumer's group, caught up.
    api_until(http, "/api/groups", "group caught up", |v| {
        v["groups"].as_array().is_some_and(|gs| {
            gs.iter().any(|g| {
                g["group"] == "finstream"
                    && g["lag"] == 0
                    && g["partitions"][0]["committed_offset"] == 5
                    && g["partitions"][0]["end_offset"] == 5
            })
        })
    });

    // The raw page: escaped on the server, not by the browser.
    let (code, page) = http_get(http, &format!("/topics/{TOPIC}"));
    assert_eq!(code, 200);
    assert!(
        page.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>window"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");

    // The pages as a person sees them.
    let shots = std::env::var_os("FINSTREAM_CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/console/console_check.mjs"
    );
    let out = output_with_timeout(
        Command::new("node")
            .arg(script)
            .arg(format!("http://{http}"))
            .arg(&shots)
            .args([TOPIC, "finstream"]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "console check failed:\n{stdout}\n{stderr}"
    );
    assert!(shots.join("overview.png").exists());
}
