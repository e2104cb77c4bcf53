//! Helpers shared by the end-to-end tests: brokers on port 0 (in-process or the real
//! binary), and librdkafka clients pointed at them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use finstream_broker::{BrokerConfig, RunningBroker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Starts an in-process broker on 127.0.0.1:0; `dir` None = in-memory store.
pub async fn start_broker(dir: Option<&Path>) -> RunningBroker {
    start_broker_with(dir, |_| {}).await
}

/// Like [`start_broker`], with the config adjusted by `f`.
pub async fn start_broker_with(
    dir: Option<&Path>,
    f: impl FnOnce(&mut BrokerConfig),
) -> RunningBroker {
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.map(Path::to_path_buf),
        ..BrokerConfig::default()
    };
    f(&mut config);
    finstream_broker::start(config)
        .await
        .expect("broker starts")
}

/// The `finstream` binary under test.
pub fn finstream_bin() -> &'static str {
    env!("CARGO_BIN_EXE_finstream")
}

/// Spawns a `finstream` command with its log echoed to the test's stderr (prefixed with
/// `tag`) and every `listen=ADDR` / `http=ADDR` it logs sent back as `(key, addr)`.
pub fn spawn_reporting(cmd: &mut Command, tag: &str) -> (Child, Receiver<(String, String)>) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn finstream");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let tag = tag.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{tag}] {line}");
            for word in line.split_whitespace() {
                for key in ["listen", "http"] {
                    if let Some(a) = word.strip_prefix(key).and_then(|w| w.strip_prefix('=')) {
                        let _ = tx.send((key.to_string(), a.to_string()));
                    }
                }
            }
        }
    });
    (child, rx)
}

/// The addresses logged under each of `keys`, in that order (see [`spawn_reporting`]).
pub fn wait_for_addresses(addrs: &Receiver<(String, String)>, keys: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = std::collections::HashMap::new();
    while keys.iter().any(|k| !found.contains_key(*k)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match addrs.recv_timeout(left) {
            Ok((k, a)) => {
                found.entry(k).or_insert(a);
            }
            Err(_) => panic!("not all of {keys:?} were logged within 30 s: {found:?}"),
        }
    }
    keys.iter().map(|k| found[*k].clone()).collect()
}

/// A child process killed when the test ends, passed or failed.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `finstream broker` as a child process on a free port, with its HTTP endpoint on another.
pub struct BinaryBroker {
    pub child: Child,
    /// Kafka listener, HOST:PORT.
    pub addr: String,
    /// Metrics/status endpoint, HOST:PORT.
    pub http: String,
}

impl BinaryBroker {
    /// Starts the binary on `data_dir` and waits until it logs both its addresses.
    pub fn start(data_dir: &Path) -> BinaryBroker {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> BinaryBroker {
        Self::start_env(data_dir, extra, &[])
    }

    /// Like [`BinaryBroker::start_with`], with extra environment variables.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> BinaryBroker {
        let mut cmd = Command::new(finstream_bin());
        cmd.envs(env.iter().copied());
        cmd.arg("broker");
        // Free ports unless the caller chose (a restart on the same address, say).
        for (flag, default) in [("--listen", "127.0.0.1:0"), ("--http", "127.0.0.1:0")] {
            if !extra.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        cmd.arg("--data-dir").arg(data_dir).args(extra);
        let (child, addrs) = spawn_reporting(&mut cmd, "broker");
        let mut found = wait_for_addresses(&addrs, &["listen", "http"]).into_iter();
        let (addr, http) = (
            found.next().unwrap_or_default(),
            found.next().unwrap_or_default(),
        );
        BinaryBroker { child, addr, http }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4");
    c
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(bootstrap);
    c.set("acks", "all").set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().expect("admin client")
}

pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create_topics request");
    for r in results {
        r.expect("topic created");
    }
}

/// A consumer without a group, assigned to `partitions` of `topic` from the beginning.
pub fn assigned_consumer(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> StreamConsumer {
    let mut c = client_config(bootstrap);
    c.set("enable.auto.commit", "false")
        .set("group.id", "unused-no-commits")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let consumer: StreamConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

/// Reads until `n` records arrived, failing after `timeout`.
pub async fn consume_n(consumer: &StreamConsumer, n: usize, timeout: Duration) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived in {timeout:?}", out.len()))
            .expect("consume");
        out.push(Record {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            timestamp: msg.timestamp().to_millis(),
        });
    }
    out
}

/// Runs `kcat` with `args`, feeding `stdin`; returns (success, stdout, stderr).
pub fn kcat(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kcat")
        // cargo points LD_LIBRARY_PATH at build outputs, which include the rdkafka crate's
        // own librdkafka.so (built without OpenSSL); kcat must use the system's.
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (apt-get install kcat); .ci/run installs it");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write to kcat");
    let out = child.wait_with_output().expect("kcat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` to completion, killing it (and failing the test) after `timeout`.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout =
                String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let stderr =
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} did not finish within {timeout:?}:\n{stdout}\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A fresh database on the local PostgreSQL (127.0.0.1:5432, user postgres), dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("fs_{tag}_{}_{n}", std::process::id());
        let admin = pg_connect("postgres://postgres@127.0.0.1:5432/postgres").await;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .expect("create test database (is PostgreSQL running on 127.0.0.1:5432?)");
        }
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// `SELECT count(*)` of a table.
pub async fn count_rows(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Rows of a table as a sorted multiset of (description, amount bits).
pub async fn table_multiset(client: &tokio_postgres::Client, table: &str) -> Vec<(String, u64)> {
    let rows = client
        .query(&format!("SELECT description, amount FROM {table}"), &[])
        .await
        .expect("select");
    let mut v: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, f64>(1).to_bits()))
        .collect();
    v.sort();
    v
}

/// What the producer makes of a CSV: the sorted multiset of (description, amount bits)
/// of its good rows.
pub fn expected_multiset(csv: &Path, scaler: &finstream_producer::Scaler) -> Vec<(String, u64)> {
    let (mut reader, columns) = finstream_producer::source::open(csv).expect("open csv");
    let stop = finstream_producer::clean::StopWords::nltk_english();
    let mut scratch = String::new();
    let mut out = Vec::new();
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).expect("read") {
        finstream_producer::source::strip_cr(&mut record);
        if let finstream_producer::source::Outcome::Message(json) =
            finstream_producer::source::process(
                &record,
                columns,
                scaler,
                &stop,
                1 << 20,
                &mut scratch,
            )
        {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            out.push((
                v["description"].as_str().unwrap().to_string(),
                v["amount"].as_f64().unwrap().to_bits(),
            ));
        }
    }
    out.sort();
    out
}

pub fn reference_scaler() -> finstream_producer::Scaler {
    finstream_producer::Scaler::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/scaler.json"),
    )
    .unwrap()
}

/// Writes `rows` generated transactions to `path`.
pub fn generate_csv(path: &Path, rows: u64, seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    finstream_producer::generate::write_csv(std::io::BufWriter::new(f), rows, seed).unwrap();
}

/// Produces a CSV into `topic` through the producer library; panics unless complete.
pub async fn produce_csv(bootstrap: &str, topic: &str, csv: &Path) -> finstream_producer::Summary {
    let cfg = finstream_producer::ProduceConfig::new(bootstrap, topic, csv, reference_scaler());
    let s = tokio::task::spawn_blocking(move || {
        finstream_producer::run(
            &cfg,
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            (),
        )
    })
    .await
    .unwrap()
    .expect("produce");
    assert!(s.complete(), "{s}");
    s
}

/// A PostgreSQL cluster of the test's own (so it can be restarted or crashed without
/// disturbing other tests): the same launcher as all-in-one's.
pub struct PrivatePg(finstream_consumer::cluster::PrivateCluster);

impl PrivatePg {
    pub fn start(parent: &Path) -> PrivatePg {
        PrivatePg(
            finstream_consumer::cluster::PrivateCluster::start(&parent.join("pg"))
                .expect("start a private PostgreSQL cluster"),
        )
    }

    pub fn ctl(&self, action: &str) {
        self.ctl_mode(action, "fast");
    }

    /// `pg_ctl ACTION -m MODE`; `stop` with mode `immediate` is a crash: no checkpoint, and
    /// asynchronously committed transactions not yet in the WAL on disk are lost.
    pub fn ctl_mode(&self, action: &str, mode: &str) {
        self.0
            .ctl(action, mode)
            .unwrap_or_else(|e| panic!("pg_ctl {action}: {e}"));
    }

    pub fn url(&self) -> String {
        self.0.url()
    }
}

/// A blocking Kafka protocol client for tests that need exact requests.
pub struct RawClient {
    sock: std::net::TcpStream,
    correlation: i32,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let sock = std::net::TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawClient {
            sock,
            correlation: 0,
        }
    }

    /// Sends `req` as API `key` version `version`; returns the decoded response.
    pub fn call<Req, Resp>(
        &mut self,
        key: kafka_protocol::messages::ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp
    where
        Req: kafka_protocol::protocol::Encodable,
        Resp: kafka_protocol::protocol::Decodable,
    {
        use bytes::BufMut;
        use kafka_protocol::protocol::{Decodable, Encodable};
        use std::io::{Read, Write};
        self.correlation += 1;
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                "raw-test",
            )));
        let mut body = bytes::BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = bytes::BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.sock.write_all(&frame).expect("send");
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len).expect("response length");
        let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
        self.sock.read_exact(&mut resp).expect("response body");
        let mut buf = bytes::Bytes::from(resp);
        let rh = kafka_protocol::messages::ResponseHeader::decode(
            &mut buf,
            key.response_header_version(version),
        )
        .unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        Resp::decode(&mut buf, version).expect("decode response")
    }
}

/// Produces one batch to partition 0 with acks=-1; returns (error code, base offset).
pub fn raw_produce(c: &mut RawClient, topic: &str, batch: bytes::Bytes) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                topic.into(),
            )))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// An uncompressed RecordBatch v2 of `values`, from producer `pid`/`epoch` starting at
/// sequence `seq` (pid -1 for a non-idempotent batch).
pub fn record_batch(values: &[&[u8]], pid: i64, epoch: i16, seq: i32) -> bytes::Bytes {
    finstream_broker::batch::uncompressed_batch(values, 1_700_000_000_000, 0, (pid, epoch, seq))
        .into()
}

/// Where `program` is on the PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

/// Runs a client script (`program script BOOTSTRAP`) against a fresh broker binary and
/// fails with its output unless it exits 0 having printed `passes` lines `PASS ...`.
pub fn run_client_script(program: &Path, script: &Path, passes: usize) {
    assert!(
        program.exists(),
        "{} is missing: run `bash scripts/setup.sh` first",
        program.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let out = output_with_timeout(
        Command::new(program)
            .arg(script)
            .arg(&broker.addr)
            .current_dir(script.parent().unwrap()),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    assert_eq!(
        stdout.matches("PASS ").count(),
        passes,
        "all {passes} steps passed:\n{stdout}"
    );
}

/// `GET path` on the HTTP endpoint at `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls `GET path` until `check` accepts the answer, or `within` passes; returns the last
/// answer either way.
pub fn http_poll(
    addr: &str,
    path: &str,
    within: Duration,
    check: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = http_get(addr, path);
        if check(code, &body) || Instant::now() > deadline {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
