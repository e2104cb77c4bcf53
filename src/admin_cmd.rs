//! `finstream topics ...` and `finstream groups ...`: administration through the librdkafka
//! admin API, so they work the same against the embedded broker and a real cluster.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::kafka_opts::{self, parse_property};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Connection options of the admin commands (no topic: it is an argument).
#[derive(Args, Debug, Clone)]
pub struct AdminConn {
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(
        long,
        alias = "bootstrap_servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092",
        global = true
    )]
    pub bootstrap_servers: String,
    /// librdkafka property (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property, global = true)]
    pub property: Vec<(String, String)>,
    /// Properties file (key=value lines) with librdkafka settings.
    #[arg(long, value_name = "FILE", global = true)]
    pub client_config: Option<std::path::PathBuf>,
}

impl AdminConn {
    fn config(&self) -> anyhow::Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in kafka_opts::collect(self.client_config.as_deref(), &self.property)? {
            c.set(k, v);
        }
        Ok(c)
    }
    fn admin(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        Ok(self.config()?.create()?)
    }
    fn consumer(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer> {
        let mut c = self.config()?;
        c.set("group.id", group.unwrap_or("finstream-admin"))
            .set("enable.auto.commit", "false");
        Ok(c.create()?)
    }
}

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    conn: AdminConn,
    #[command(subcommand)]
    cmd: TopicsCmd,
}

#[derive(Subcommand, Debug)]
enum TopicsCmd {
    /// List topics with their partition counts.
    List,
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// Topic config, e.g. --add-config retention.ms=86400000 (repeatable; `--config`
        /// is the settings file).
        #[arg(long, value_parser = parse_property)]
        add_config: Vec<(String, String)>,
    },
    /// Partitions with leaders and offsets, and the topic's configs with their sources.
    Describe { name: String },
    /// Change a topic: set or remove configs (the others it sets stay), add partitions.
    Alter {
        name: String,
        /// Config to set, e.g. --add-config cleanup.policy=compact (repeatable).
        #[arg(long, value_parser = parse_property)]
        add_config: Vec<(String, String)>,
        /// Config to return to its default (repeatable).
        #[arg(long)]
        delete_config: Vec<String>,
        /// Grow the topic to this many partitions (partitions are never removed).
        #[arg(long)]
        partitions: Option<usize>,
    },
    /// Delete the records below an offset: moves the partitions' log start (DeleteRecords).
    DeleteRecords {
        name: String,
        /// Partition (repeatable) [default: every partition].
        #[arg(long)]
        partition: Vec<i32>,
        /// New log start; -1 deletes every record up to the high watermark.
        #[arg(long, allow_negative_numbers = true)]
        offset: i64,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    conn: AdminConn,
    #[command(subcommand)]
    cmd: GroupsCmd,
}

#[derive(Subcommand, Debug)]
enum GroupsCmd {
    /// List consumer groups with state and member count.
    List,
    /// Members and their partitions, committed offsets and lag per partition.
    Describe {
        group: String,
        /// Topics to report offsets for [default: the topics of the members' assignments].
        #[arg(long)]
        topic: Vec<String>,
    },
}

pub async fn topics(args: TopicsArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    match args.cmd {
        TopicsCmd::List => list_topics(conn)?,
        TopicsCmd::Create {
            name,
            partitions,
            replication_factor,
            add_config,
        } => create_topic(conn, &name, partitions, replication_factor, &add_config).await?,
        TopicsCmd::Describe { name } => describe_topic(conn, &name).await?,
        TopicsCmd::Alter {
            name,
            add_config,
            delete_config,
            partitions,
        } => {
            let changes = (add_config.as_slice(), delete_config.as_slice());
            crate::topics_alter::alter(&conn.admin()?, &name, changes, partitions).await?
        }
        TopicsCmd::DeleteRecords {
            name,
            partition,
            offset,
        } => {
            let clients = (&conn.admin()?, &conn.consumer(None)?);
            crate::topics_alter::delete_records(clients, &name, &partition, offset).await?
        }
        TopicsCmd::Delete { name } => {
            for r in conn
                .admin()?
                .delete_topics(&[&name], &AdminOptions::new())
                .await?
            {
                if let Err((t, e)) = r {
                    bail!("cannot delete topic {t}: {e}");
                }
            }
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_topics(conn: &AdminConn) -> anyhow::Result<()> {
    let c = conn.consumer(None)?;
    let md = tokio::task::block_in_place(|| c.fetch_metadata(None, TIMEOUT))?;
    let mut topics: Vec<_> = md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    println!("{:<40} PARTITIONS", "TOPIC");
    for (name, n) in topics {
        println!("{name:<40} {n}");
    }
    Ok(())
}

async fn create_topic(
    conn: &AdminConn,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    config: &[(String, String)],
) -> anyhow::Result<()> {
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    for r in conn
        .admin()?
        .create_topics(&[topic], &AdminOptions::new())
        .await?
    {
        if let Err((t, e)) = r {
            bail!("cannot create topic {t}: {e}");
        }
    }
    println!("created topic {name} ({partitions} partitions)");
    Ok(())
}

async fn describe_topic(conn: &AdminConn, name: &str) -> anyhow::Result<()> {
    let c = conn.consumer(None)?;
    let md = tokio::task::block_in_place(|| c.fetch_metadata(Some(name), TIMEOUT))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == name) else {
        bail!("no topic {name}");
    };
    if let Some(e) = t.error() {
        bail!("topic {name}: {e:?}");
    }
    println!("topic {name}: {} partitions", t.partitions().len());
    println!(
        "{:>9} {:>6} {:>12} {:>12} {:>12}",
        "PARTITION", "LEADER", "LOW", "HIGH", "MESSAGES"
    );
    for p in t.partitions() {
        let (lo, hi) = tokio::task::block_in_place(|| c.fetch_watermarks(name, p.id(), TIMEOUT))?;
        println!(
            "{:>9} {:>6} {lo:>12} {hi:>12} {:>12}",
            p.id(),
            p.leader(),
            hi - lo
        );
    }
    let configs = conn
        .admin()?
        .describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new())
        .await?;
    if let Some(Ok(res)) = configs.first() {
        println!("config:");
        for e in &res.entries {
            let source = match e.source {
                rdkafka::admin::ConfigSource::DynamicTopic => "DYNAMIC_TOPIC_CONFIG",
                rdkafka::admin::ConfigSource::StaticBroker => "STATIC_BROKER_CONFIG",
                rdkafka::admin::ConfigSource::Default => "DEFAULT_CONFIG",
                _ => "OTHER",
            };
            let value = e.value.as_deref().unwrap_or("");
            println!("  {} = {value}  ({source})", e.name);
        }
    }
    Ok(())
}

/// Topic partitions of a consumer-protocol assignment.
fn assignment_partitions(raw: Option<&[u8]>) -> Vec<(String, Vec<i32>)> {
    let Some(raw) = raw.filter(|r| r.len() >= 2) else {
        return Vec::new();
    };
    let mut buf = bytes::Bytes::copy_from_slice(raw);
    let version = i16::from_be_bytes([raw[0], raw[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.to_string(), tp.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub async fn groups(args: GroupsArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    match args.cmd {
        GroupsCmd::List => {
            let c = conn.consumer(None)?;
            let list = tokio::task::block_in_place(|| c.fetch_group_list(None, TIMEOUT))?;
            println!("{:<40} {:<22} {:<10} MEMBERS", "GROUP", "STATE", "TYPE");
            for g in list.groups() {
                println!(
                    "{:<40} {:<22} {:<10} {}",
                    g.name(),
                    g.state(),
                    g.protocol_type(),
                    g.members().len()
                );
            }
        }
        GroupsCmd::Describe { group, topic } => {
            let c = conn.consumer(Some(&group))?;
            let list = tokio::task::block_in_place(|| c.fetch_group_list(Some(&group), TIMEOUT))?;
            let g = list.groups().first().context("no such group")?;
            println!(
                "group {group}: state {}, protocol {} {}",
                g.state(),
                g.protocol_type(),
                g.protocol()
            );
            let mut topics: Vec<String> = topic;
            for m in g.members() {
                let parts = assignment_partitions(m.assignment());
                let shown: Vec<String> = parts.iter().map(|(t, ps)| format!("{t}{ps:?}")).collect();
                println!(
                    "  member {} client {} host {}: {}",
                    m.id(),
                    m.client_id(),
                    m.client_host(),
                    shown.join(" ")
                );
                for (t, _) in parts {
                    if !topics.contains(&t) {
                        topics.push(t);
                    }
                }
            }
            if topics.is_empty() {
                println!("(no topics given and no members: pass --topic to see committed offsets)");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<30} {:>9} {:>12} {:>12} {:>10}",
                "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"
            );
            for t in topics {
                let md = tokio::task::block_in_place(|| c.fetch_metadata(Some(&t), TIMEOUT))?;
                let mut tpl = TopicPartitionList::new();
                for p in md.topics().iter().flat_map(|x| x.partitions()) {
                    tpl.add_partition(&t, p.id());
                }
                let committed = tokio::task::block_in_place(|| c.committed_offsets(tpl, TIMEOUT))?;
                for e in committed.elements() {
                    let (_, hi) = tokio::task::block_in_place(|| {
                        c.fetch_watermarks(&t, e.partition(), TIMEOUT)
                    })?;
                    let (off, lag) = match e.offset().to_raw() {
                        Some(o) if o >= 0 => (o.to_string(), (hi - o).to_string()),
                        _ => ("-".to_string(), hi.to_string()),
                    };
                    println!("{t:<30} {:>9} {off:>12} {hi:>12} {lag:>10}", e.partition());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
