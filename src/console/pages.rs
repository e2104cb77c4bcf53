//! The console's HTML pages, rendered on the server with every user value escaped; the
//! overview's charts and refresh come from `assets/console.js`.

use std::fmt::Write;

use finstream_broker::{BrokerView, Start, TopicView};

use super::data::{self, broker};
use super::text::{bytes_as_text, esc, iso_time, pretty_json, url_encode};
use super::{Console, Query, Refusal, Response};

/// Answers a page path, or `None` if there is no such page.
pub async fn route(console: &Console, path: &str, q: &Query) -> Option<Result<Response, Refusal>> {
    let page = match path {
        "/" | "/index.html" => Ok(overview(console)),
        "/topics" => broker(console).map(|b| layout("Topics", &topics_table(&b.topics()))),
        "/groups" => broker(console).map(|b| layout("Consumer groups", &groups_table(b))),
        "/dead-letters" => dead_letters(console, q).await,
        _ => {
            let name = path.strip_prefix("/topics/")?;
            let name = super::text::url_decode(name)?;
            topic(console, &name, q)
        }
    };
    Some(page.map(|body| Response::ok("text/html; charset=utf-8", body)))
}

/// A page around `body`, with the navigation bar.
fn layout(title: &str, body: &str) -> String {
    layout_with(title, body, "")
}

fn layout_with(title: &str, body: &str, head: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · finstream</title><link rel=\"stylesheet\" href=\"/assets/console.css\">{head}\
         </head><body><nav><a class=\"brand\" href=\"/\">finstream</a><a href=\"/topics\">Topics</a>\
         <a href=\"/groups\">Consumer groups</a><a href=\"/dead-letters\">Dead letters</a></nav>\
         <main><h1>{t}</h1>{body}</main></body></html>\n",
        t = esc(title)
    )
}

/// The page for a refused request.
pub fn error_page(e: &Refusal) -> String {
    layout(
        "Cannot show this",
        &format!("<p class=\"error\">{}</p>", esc(e.message())),
    )
}

fn overview(console: &Console) -> String {
    let mut h = format!(
        "<p id=\"uptime\">up {:.0} s</p><section id=\"charts\" class=\"charts\">\
         <div class=\"chart\" id=\"chart-produced\"><h3>Produced, records/s</h3></div>\
         <div class=\"chart\" id=\"chart-loaded\"><h3>Loaded, rows/s</h3></div>\
         <div class=\"chart\" id=\"chart-lag\"><h3>Lag, messages</h3></div>\
         <div class=\"chart\" id=\"chart-latency\"><h3>Produce latency, ms (mean)</h3></div>\
         </section><div id=\"live\">",
        console.started.elapsed().as_secs_f64()
    );
    if let Some(c) = &console.observed.consumer {
        consumer_section(&mut h, c);
    }
    if let Some(p) = &console.observed.producer {
        producer_section(&mut h, p);
    }
    if let Some(b) = &console.observed.broker {
        let topics = b.topics();
        h.push_str("<h2>Topics</h2>");
        h.push_str(&topics_table(&topics));
        h.push_str("<h2>Consumer groups</h2>");
        h.push_str(&groups_table(b));
        dlq_counts(&mut h, &topics);
    }
    h.push_str("</div>");
    layout_with(
        "finstream",
        &h,
        "<link rel=\"stylesheet\" href=\"/assets/uPlot.min.css\">\
         <script defer src=\"/assets/uPlot.iife.min.js\"></script><script defer src=\"/assets/console.js\"></script>",
    )
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

fn topic_link(name: &str) -> String {
    format!(
        "<a href=\"/topics/{}\">{}</a>",
        esc(&url_encode(name)),
        esc(name)
    )
}

fn topics_table(topics: &[TopicView]) -> String {
    let mut h = String::from("<table id=\"topics\"><tr><th>topic</th><th>partition</th><th>start offset</th><th>end offset</th><th>messages</th></tr>");
    for t in topics {
        for p in &t.partitions {
            let (lo, hi) = (p.log_start, p.high_watermark);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{lo}</td><td>{hi}</td><td>{}</td></tr>",
                topic_link(&t.name),
                p.index,
                hi - lo
            );
        }
    }
    h.push_str("</table>");
    h
}

fn groups_table(b: &BrokerView) -> String {
    let mut h = String::from("<table id=\"groups\"><tr><th>group</th><th>state</th><th>members</th><th>topic</th><th>partition</th><th>committed</th><th>end offset</th><th>lag</th></tr>");
    let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    for g in b.groups() {
        let (id, state, members) = (esc(&g.id), g.state, g.members);
        if g.committed.is_empty() {
            let _ = write!(h, "<tr><td>{id}</td><td>{state}</td><td>{members}</td><td></td><td></td><td></td><td></td><td></td></tr>");
        }
        for c in &g.committed {
            let _ = write!(
                h,
                "<tr><td>{id}</td><td>{state}</td><td>{members}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"lag\">{}</td></tr>",
                topic_link(&c.topic),
                c.partition,
                opt(c.offset),
                opt(c.end_offset),
                opt(c.lag)
            );
        }
    }
    h.push_str("</table>");
    h
}

fn dlq_counts(h: &mut String, topics: &[TopicView]) {
    h.push_str("<h2>Dead letters</h2><table id=\"dlq\"><tr><th>topic</th><th>messages</th></tr>");
    for t in topics.iter().filter(|t| t.name.ends_with(".dlq")) {
        let n: i64 = t
            .partitions
            .iter()
            .map(|p| p.high_watermark - p.log_start)
            .sum();
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", topic_link(&t.name));
    }
    h.push_str("</table><p><a href=\"/dead-letters\">All dead letters, with reasons</a></p>");
}

/// Bytes for a table cell: text (JSON indented) or base64, escaped.
fn cell(b: Option<&[u8]>) -> String {
    match b {
        None => "<span class=\"null\">null</span>".into(),
        Some(b) => {
            let (t, enc) = bytes_as_text(b);
            let shown = pretty_json(&t).unwrap_or(t);
            let tag = if enc == "base64" {
                "<span class=\"enc\">base64</span> "
            } else {
                ""
            };
            format!("{tag}<pre>{}</pre>", esc(&shown))
        }
    }
}

fn topic(console: &Console, name: &str, q: &Query) -> Result<String, Refusal> {
    let b = broker(console)?;
    let t = b
        .topic(name)
        .ok_or_else(|| Refusal::NotFound(format!("no topic {name:?}")))?;
    let (partition, page) = data::messages(console, name, q, (Start::Tail(50), 50))?;
    let limit = q.limit(50)?;
    let mut h = String::new();
    browse_form(&mut h, &t, partition, q, limit);
    let _ = write!(
        h,
        "<p id=\"range\">partition {partition}: offsets {} to {} · showing from offset {}</p>",
        page.log_start, page.high_watermark, page.from
    );
    h.push_str("<table id=\"messages\"><tr><th>offset</th><th>timestamp</th><th>key</th><th>headers</th><th>value</th></tr>");
    for r in &page.records {
        let headers: String = r
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.as_deref().map_or("null".into(), |v| bytes_as_text(v).0);
                format!("<div>{}={}</div>", esc(k), esc(&v))
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"headers\">{headers}</td><td class=\"value\">{}</td></tr>",
            r.offset,
            iso_time(r.timestamp),
            cell(r.key.as_deref()),
            cell(r.value.as_deref())
        );
    }
    h.push_str("</table>");
    let base = format!(
        "/topics/{}?partition={partition}&limit={limit}",
        url_encode(name)
    );
    let older = (page.from - limit as i64).max(page.log_start);
    let _ = write!(
        h,
        "<p class=\"pager\"><a id=\"older\" href=\"{}&amp;offset={older}\">older</a> \
         <a id=\"newer\" href=\"{}&amp;offset={}\">newer</a></p>",
        esc(&base),
        esc(&base),
        page.next_offset
    );
    Ok(layout(&format!("Topic {name}"), &h))
}

fn browse_form(h: &mut String, t: &TopicView, partition: i32, q: &Query, limit: usize) {
    let _ = write!(
        h,
        "<form id=\"browse\" method=\"get\" action=\"/topics/{}\"><label>partition <select name=\"partition\">",
        esc(&url_encode(&t.name))
    );
    for p in &t.partitions {
        let sel = if p.index == partition {
            " selected"
        } else {
            ""
        };
        let _ = write!(h, "<option value=\"{0}\"{sel}>{0}</option>", p.index);
    }
    let _ = write!(
        h,
        "</select></label> <label>from offset <input name=\"offset\" size=\"10\" value=\"{}\"></label> \
         <label>or from time <input name=\"timestamp\" size=\"24\" placeholder=\"2026-12-02T10:00:00Z\" value=\"{}\"></label> \
         <label>limit <input name=\"limit\" size=\"5\" value=\"{limit}\"></label> <button>Show</button></form>",
        esc(q.get("offset").unwrap_or("")),
        esc(q.get("timestamp").unwrap_or(""))
    );
}

async fn dead_letters(console: &Console, q: &Query) -> Result<String, Refusal> {
    let limit = q.limit(100)?;
    let d = data::dead_letters(console, limit).await;
    let mut h = String::new();
    if let Some(note) = &d.consumer_note {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    let _ = write!(
        h,
        "<p>The newest {limit} at most: bad CSV rows the producer sent to <code>&lt;topic&gt;.dlq</code>, \
         and poison messages the consumer set aside in <code>finstream_dead_letters</code>.</p>\
         <table id=\"dead-letters\"><tr><th>source</th><th>time</th><th>location</th><th>reason</th><th>raw</th><th>kept in</th></tr>"
    );
    for d in &d.items {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"value\">{}</td><td>{}</td></tr>",
            d.source,
            iso_time(d.timestamp),
            esc(&d.location),
            esc(&d.reason),
            cell(Some(&d.raw)),
            esc(&d.kept_in)
        );
    }
    h.push_str("</table>");
    Ok(layout("Dead letters", &h))
}
