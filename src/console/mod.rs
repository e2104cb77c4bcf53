//! The web console on the HTTP address: pages (`/`, `/topics`, `/topics/<name>`,
//! `/groups`, `/dead-letters`), the JSON API underneath them (`/api/...`), and the
//! vendored assets. Read-only, every user value escaped, every request bounded (at most
//! [`MAX_LIMIT`] records, a bounded read per partition).

mod api;
mod data;
mod pages;
pub mod sampler;
pub mod series;
mod text;

use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use finstream_broker::browse::MAX_LIMIT;

use crate::http::Observed;

/// Where the console finds the consumer's dead-letter table.
#[derive(Clone)]
pub struct DeadLetterTable {
    /// The consumer's PostgreSQL.
    pub target: finstream_consumer::PgTarget,
    /// The consumer's target table (`NAME` or `SCHEMA.NAME`); the dead letters lie beside it.
    pub table: String,
}

/// Everything a console request reads.
pub struct Console {
    /// What this process runs.
    pub observed: Observed,
    /// The live charts.
    pub series: Arc<Mutex<series::Series>>,
    /// When the process started.
    pub started: Instant,
}

/// A response: status line, content type, body.
pub struct Response {
    pub status: &'static str,
    pub ctype: &'static str,
    pub body: String,
}

impl Response {
    fn ok(ctype: &'static str, body: impl Into<String>) -> Self {
        Response {
            status: "200 OK",
            ctype,
            body: body.into(),
        }
    }

    /// 404, in plain text.
    pub fn not_found() -> Self {
        Response {
            status: "404 Not Found",
            ctype: "text/plain; charset=utf-8",
            body: "not found\n".into(),
        }
    }
}

/// A request that cannot be answered, and the status that says why.
#[derive(Debug)]
pub enum Refusal {
    /// The parameters are wrong (400).
    BadRequest(String),
    /// No such topic or partition, or no broker in this process (404).
    NotFound(String),
    /// A source (PostgreSQL, the log) failed (503).
    Unavailable(String),
}

impl Refusal {
    fn status(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "400 Bad Request",
            Refusal::NotFound(_) => "404 Not Found",
            Refusal::Unavailable(_) => "503 Service Unavailable",
        }
    }

    fn message(&self) -> &str {
        match self {
            Refusal::BadRequest(m) | Refusal::NotFound(m) | Refusal::Unavailable(m) => m,
        }
    }
}

/// A request's query parameters, decoded.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=2`; a parameter that does not decode is a [`Refusal::BadRequest`].
    pub fn parse(q: &str) -> Result<Self, Refusal> {
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (text::url_decode(k), text::url_decode(v)) {
                (Some(k), Some(v)) => out.push((k, v)),
                _ => {
                    return Err(Refusal::BadRequest(format!(
                        "query parameter {pair:?} is not valid percent-encoded UTF-8"
                    )))
                }
            }
        }
        Ok(Query(out))
    }

    /// The value of `name` if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// `name` as a number, if given.
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Refusal> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Refusal::BadRequest(format!("{name}={v:?} is not a valid number")))
            })
            .transpose()
    }

    /// `limit`: `default` when absent, else 1..=[`MAX_LIMIT`].
    fn limit(&self, default: usize) -> Result<usize, Refusal> {
        match self.number::<i64>("limit")? {
            None => Ok(default),
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(Refusal::BadRequest(format!(
                "limit={n} is out of range: 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

/// Answers a GET of `path` with query `query`, or `None` if the path is not the
/// console's.
pub async fn route(console: &Console, path: &str, query: &str) -> Option<Response> {
    let query = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return Some(refusal(path, &e)),
    };
    let answer = if let Some(api) = path.strip_prefix("/api/") {
        api::route(console, api, &query).await?
    } else if let Some(asset) = path.strip_prefix("/assets/") {
        return assets(asset);
    } else {
        pages::route(console, path, &query).await?
    };
    Some(answer.unwrap_or_else(|e| refusal(path, &e)))
}

/// The refusal as JSON for the API, as a page otherwise.
fn refusal(path: &str, e: &Refusal) -> Response {
    if path.starts_with("/api/") {
        Response {
            status: e.status(),
            ctype: "application/json",
            body: serde_json::json!({ "error": e.message() }).to_string(),
        }
    } else {
        Response {
            status: e.status(),
            ctype: "text/html; charset=utf-8",
            body: pages::error_page(e),
        }
    }
}

/// The vendored and own static files, compiled in.
fn assets(name: &str) -> Option<Response> {
    let (ctype, body): (&'static str, &'static str) = match name {
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/console.js"),
        ),
        "console.css" => (
            "text/css; charset=utf-8",
            include_str!("assets/console.css"),
        ),
        "uPlot.iife.min.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/uplot/uPlot.iife.min.js"),
        ),
        "uPlot.min.css" => (
            "text/css; charset=utf-8",
            include_str!("assets/uplot/uPlot.min.css"),
        ),
        "uPlot.LICENSE.txt" => (
            "text/plain; charset=utf-8",
            include_str!("assets/uplot/LICENSE"),
        ),
        _ => return Some(Response::not_found()),
    };
    Some(Response::ok(ctype, body))
}
