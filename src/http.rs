//! The operations HTTP endpoint (`--http HOST:PORT`): `/metrics` (Prometheus text),
//! `/healthz` (alive), `/readyz` (ready to serve) and `/` (a status page that refreshes
//! itself). A deliberately tiny HTTP/1.1 server: GET and HEAD, one request per connection,
//! request heads capped at 8 KiB and due within [`HEAD_DEADLINE`], at most
//! [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), and a pause after a
//! failed accept (e.g. out of file descriptors) instead of a busy loop.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use finstream_broker::{BrokerView, TopicView};
use finstream_promtext::{Kind, Text};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// The whole request head must arrive within this long, however slowly it trickles in.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head.
const MAX_HEAD: usize = 8192;

/// What the endpoint can report on.
#[derive(Clone, Default)]
pub struct Observed {
    /// The embedded broker, when this process runs one.
    pub broker: Option<BrokerView>,
    /// The consumer's live counters, when this process runs one.
    pub consumer: Option<Arc<finstream_consumer::Stats>>,
    /// The producer's live counters, when this process runs one.
    pub producer: Option<Arc<finstream_producer::Stats>>,
}

/// Serves on `addr` unless it is `off`. Returns the bound address.
pub async fn maybe_serve(addr: &str, observed: Observed) -> anyhow::Result<Option<SocketAddr>> {
    if addr.is_empty() || addr.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    serve(addr, observed).await.map(Some)
}

/// Binds `addr` and serves until the process ends. Returns the bound address.
pub async fn serve(addr: &str, observed: Observed) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(http = %local, "metrics and status on http://{local}/");
    let started = Instant::now();
    tokio::spawn(accept_loop(listener, observed, started));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, observed: Observed, started: Instant) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (sock, _) = finstream_broker::server::accept(&listener).await;
        let observed = observed.clone();
        tokio::spawn(async move {
            let _ = handle(sock, &observed, started).await;
            drop(permit);
        });
    }
}

/// Reads the request head (up to the blank line), all of it within [`HEAD_DEADLINE`].
async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Ok(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(true)
    };
    match tokio::time::timeout(HEAD_DEADLINE, read).await {
        Ok(Ok(true)) => Ok(Some(head)),
        Ok(Ok(false)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

async fn handle(mut sock: TcpStream, observed: &Observed, started: Instant) -> std::io::Result<()> {
    let Some(head) = read_head(&mut sock).await? else {
        return Ok(());
    };
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD only\n".to_string(),
        )
    } else {
        route(path, observed, started).await
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if status.starts_with("405") {
        resp.push_str("Allow: GET, HEAD\r\n");
    }
    resp.push_str("\r\n");
    if method != "HEAD" {
        resp.push_str(&body);
    }
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// The response to a GET of `path`: status, content type, body.
async fn route(
    path: &str,
    observed: &Observed,
    started: Instant,
) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics(observed, started),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => match readiness(observed).await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/" | "/index.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            status_page(observed, started),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    }
}

async fn readiness(observed: &Observed) -> Result<(), String> {
    if observed.broker.is_none() && observed.consumer.is_none() {
        return Ok(());
    }
    if let Some(c) = &observed.consumer {
        if !c.assigned() {
            return Err("consumer has no partitions assigned".into());
        }
        if !c.postgres_ok() {
            return Err("PostgreSQL is unreachable".into());
        }
    }
    Ok(())
}

fn metrics(observed: &Observed, started: Instant) -> String {
    let mut t = Text::default();
    t.scalar(
        Kind::Gauge,
        "finstream_uptime_seconds",
        "Seconds since start.",
        format_args!("{:.3}", started.elapsed().as_secs_f64()),
    );
    if let Some(b) = &observed.broker {
        b.render_metrics(&mut t);
    }
    if let Some(c) = &observed.consumer {
        c.render(&mut t);
    }
    if let Some(p) = &observed.producer {
        p.render(&mut t);
    }
    t.finish()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_page(observed: &Observed, started: Instant) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>finstream status</title><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}\
         th{background:#eee}td:first-child,th:first-child{text-align:left}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>finstream</h1><p id=\"uptime\">up {:.0} s</p>",
        started.elapsed().as_secs_f64()
    );
    if let Some(c) = &observed.consumer {
        consumer_section(&mut h, c);
    }
    if let Some(p) = &observed.producer {
        producer_section(&mut h, p);
    }
    if let Some(b) = &observed.broker {
        let topics = b.topics();
        topics_section(&mut h, &topics);
        groups_section(&mut h, b);
        dead_letters_section(&mut h, &topics);
    }
    h.push_str("</body></html>\n");
    h
}

fn consumer_section(h: &mut String, c: &finstream_consumer::Stats) {
    let s = c.snapshot();
    let _ = write!(
        h,
        "<h2>Consumer</h2><table id=\"consumer\"><tr><th>rows loaded</th><th>rows/s</th><th>dead letters</th><th>batches</th><th>retries</th><th>PostgreSQL</th></tr>\
         <tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        s.rows_loaded,
        s.rows_per_sec,
        s.dead_letters,
        s.batches,
        s.retries,
        if c.postgres_ok() { "up" } else { "DOWN" }
    );
    let lag = c.lag();
    if !lag.is_empty() {
        h.push_str("<table id=\"consumer-lag\"><tr><th>topic</th><th>partition</th><th>loaded up to</th><th>high watermark</th><th>lag</th></tr>");
        for ((topic, p), l) in &lag {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{p}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(topic),
                l.position,
                l.high_watermark,
                l.lag()
            );
        }
        h.push_str("</table>");
    }
}

fn producer_section(h: &mut String, p: &finstream_producer::Stats) {
    let s = p.snapshot();
    let _ = write!(
        h,
        "<h2>Producer</h2><table id=\"producer\"><tr><th>rows read</th><th>rows/s</th><th>sent</th><th>dead-lettered</th><th>failed</th></tr>\
         <tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        s.rows_read, s.rows_per_sec, s.sent, s.dead_lettered, s.failed
    );
}

fn topics_section(h: &mut String, topics: &[TopicView]) {
    h.push_str("<h2>Topics</h2><table id=\"topics\"><tr><th>topic</th><th>partition</th><th>start offset</th><th>end offset</th><th>messages</th></tr>");
    for t in topics {
        for p in &t.partitions {
            let (lo, hi) = (p.log_start, p.high_watermark);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{lo}</td><td>{hi}</td><td>{}</td></tr>",
                esc(&t.name),
                p.index,
                hi - lo
            );
        }
    }
    h.push_str("</table>");
}

fn groups_section(h: &mut String, b: &BrokerView) {
    h.push_str("<h2>Consumer groups</h2><table id=\"groups\"><tr><th>group</th><th>state</th><th>members</th><th>topic</th><th>partition</th><th>committed</th><th>lag</th></tr>");
    for g in b.groups() {
        let (id, state, members) = (esc(&g.id), g.state, g.members);
        if g.committed.is_empty() {
            let _ = write!(h, "<tr><td>{id}</td><td>{state}</td><td>{members}</td><td></td><td></td><td></td><td></td></tr>");
        }
        for c in &g.committed {
            let _ = write!(
                h,
                "<tr><td>{id}</td><td>{state}</td><td>{members}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.topic),
                c.partition,
                c.offset.map_or(String::new(), |o| o.to_string()),
                c.lag.map_or(String::new(), |l| l.to_string())
            );
        }
    }
    h.push_str("</table>");
}

fn dead_letters_section(h: &mut String, topics: &[TopicView]) {
    h.push_str("<h2>Dead letters</h2><table id=\"dlq\"><tr><th>topic</th><th>messages</th></tr>");
    for t in topics.iter().filter(|t| t.name.ends_with(".dlq")) {
        let n: i64 = t
            .partitions
            .iter()
            .map(|p| p.high_watermark - p.log_start)
            .sum();
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(&t.name));
    }
    h.push_str("</table>");
}
