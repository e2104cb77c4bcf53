//! `finstream topics alter` and `finstream topics delete-records`: changing a topic's
//! configs and partition count, and moving partitions' log start, through the librdkafka
//! admin API (AlterConfigs, CreatePartitions, DeleteRecords).

use anyhow::{bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, ResourceSpecifier,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::admin_cmd::TIMEOUT;

type Admin = AdminClient<DefaultClientContext>;

/// The topic's own (dynamic) configs after setting `set` and removing `delete`.
async fn merged_configs(
    admin: &Admin,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new())
        .await?;
    let res = match described.into_iter().next() {
        Some(Ok(res)) => res,
        Some(Err(e)) => bail!("cannot describe topic {name}: {e}"),
        None => bail!("no answer describing topic {name}"),
    };
    let mut out: Vec<(String, String)> = res
        .entries
        .iter()
        .filter(|e| matches!(e.source, ConfigSource::DynamicTopic))
        .filter(|e| !delete.contains(&e.name) && !set.iter().any(|(k, _)| *k == e.name))
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    out.extend(set.iter().cloned());
    Ok(out)
}

/// Sets and removes configs of topic `name` (the others it sets stay), and grows it to
/// `partitions` partitions when given.
pub async fn alter(
    admin: &Admin,
    name: &str,
    (set, delete): (&[(String, String)], &[String]),
    partitions: Option<usize>,
) -> anyhow::Result<()> {
    if let Some(count) = partitions {
        let grown = admin
            .create_partitions(&[NewPartitions::new(name, count)], &AdminOptions::new())
            .await?;
        for r in grown {
            if let Err((t, e)) = r {
                bail!("cannot grow topic {t} to {count} partitions: {e}");
            }
        }
        println!("topic {name} now has {count} partitions");
    }
    if set.is_empty() && delete.is_empty() {
        return Ok(());
    }
    let configs = merged_configs(admin, name, set, delete).await?;
    let mut change = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in &configs {
        change = change.set(k, v);
    }
    for r in admin.alter_configs(&[change], &AdminOptions::new()).await? {
        if let Err((_, e)) = r {
            bail!("cannot alter the configs of topic {name}: {e}");
        }
    }
    // The rdkafka crate drops AlterConfigs' per-topic errors (INVALID_CONFIG): read back.
    let now = merged_configs(admin, name, &[], &[]).await?;
    for (k, v) in set {
        if !now.iter().any(|(nk, nv)| nk == k && nv == v) {
            bail!("the broker refused {k}={v} for topic {name} (INVALID_CONFIG?); nothing changed");
        }
    }
    for (k, v) in set {
        println!("topic {name}: {k} = {v}");
    }
    for k in delete {
        println!("topic {name}: {k} back to its default");
    }
    Ok(())
}

/// Moves the log start of `partitions` of topic `name` (all when empty) to `offset` (-1:
/// the high watermark, deleting every record) and prints the new low watermarks.
pub async fn delete_records(
    (admin, consumer): (&Admin, &BaseConsumer),
    name: &str,
    partitions: &[i32],
    offset: i64,
) -> anyhow::Result<()> {
    let md = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(name), TIMEOUT))?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none())
        .with_context(|| format!("no topic {name}"))?;
    let all: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    let chosen = if partitions.is_empty() {
        all.clone()
    } else {
        partitions.to_vec()
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &chosen {
        if !all.contains(&p) {
            bail!("topic {name} has no partition {p}");
        }
        let at = if offset < 0 {
            Offset::End
        } else {
            Offset::Offset(offset)
        };
        tpl.add_partition_offset(name, p, at)?;
    }
    let out = admin.delete_records(&tpl, &AdminOptions::new()).await?;
    println!("{:>9} {:>12}", "PARTITION", "LOW");
    for e in out.elements() {
        match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(low)) => println!("{:>9} {low:>12}", e.partition()),
            (Ok(()), other) => println!("{:>9} {other:?}", e.partition()),
            (Err(err), _) => bail!("partition {}: {err}", e.partition()),
        }
    }
    Ok(())
}
