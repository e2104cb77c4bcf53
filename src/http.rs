//! The operations HTTP endpoint (`--http HOST:PORT`): `/metrics` (Prometheus text),
//! `/healthz` (alive), `/readyz` (ready to serve), and the web console with its JSON API
//! (`console/`). A deliberately tiny HTTP/1.1 server: GET and HEAD, one request per connection,
//! request heads capped at 8 KiB and due within [`HEAD_DEADLINE`], at most
//! [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), and a pause after a
//! failed accept (e.g. out of file descriptors) instead of a busy loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use finstream_broker::BrokerView;
use finstream_promtext::{Kind, Text};

use crate::console::{self, Console, DeadLetterTable, Response};

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
    /// The consumer's dead-letter table, when this process runs a consumer.
    pub dead_letters: Option<DeadLetterTable>,
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
    let console = Arc::new(Console {
        series: console::sampler::start(observed.clone()),
        observed,
        started: Instant::now(),
    });
    tokio::spawn(accept_loop(listener, console));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, console: Arc<Console>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (sock, _) = finstream_broker::server::accept(&listener).await;
        let console = console.clone();
        tokio::spawn(async move {
            let _ = handle(sock, &console).await;
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

async fn handle(mut sock: TcpStream, console: &Console) -> std::io::Result<()> {
    let Some(head) = read_head(&mut sock).await? else {
        return Ok(());
    };
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Response {
        status,
        ctype,
        body,
    } = if method != "GET" && method != "HEAD" {
        Response {
            status: "405 Method Not Allowed",
            ctype: "text/plain",
            body: "GET or HEAD only\n".to_string(),
        }
    } else {
        route(path, query, console).await
    };
    // The console's pages load only their own scripts and styles.
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n",
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

/// The response to a GET of `path` with `query`.
async fn route(path: &str, query: &str, console: &Console) -> Response {
    let text = |status, body: &str| Response {
        status,
        ctype: "text/plain; charset=utf-8",
        body: body.to_string(),
    };
    match path {
        "/metrics" => Response {
            status: "200 OK",
            ctype: "text/plain; version=0.0.4",
            body: metrics(&console.observed, console.started),
        },
        "/healthz" => text("200 OK", "ok\n"),
        "/readyz" => match readiness(&console.observed).await {
            Ok(()) => text("200 OK", "ready\n"),
            Err(why) => text("503 Service Unavailable", &format!("not ready: {why}\n")),
        },
        _ => console::route(console, path, query)
            .await
            .unwrap_or_else(Response::not_found),
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
