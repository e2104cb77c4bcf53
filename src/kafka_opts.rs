//! librdkafka properties from `-X key=value` flags and an optional properties file, the way
//! kcat and the Kafka CLI tools take them.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;

/// The Kafka client options `produce` and `consume` share.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(
        long,
        alias = "bootstrap_servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Topic.
    #[arg(
        long,
        env = "FINSTREAM_TOPIC",
        default_value = "financial_transactions"
    )]
    pub topic: String,
    /// librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable; wins over the file).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
    /// Properties file (key=value lines) with librdkafka settings.
    #[arg(long, value_name = "FILE", visible_aliases = ["producer-config", "consumer-config"])]
    pub client_config: Option<std::path::PathBuf>,
}

impl KafkaArgs {
    /// The properties file's settings, then the `-X` flags.
    pub fn properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        collect(self.client_config.as_deref(), &self.property)
    }
}

/// Parses `key=value`.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

/// Reads a Java-style properties file: `key=value` lines, `#` or `!` comments.
pub fn read_properties(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read properties file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        match parse_property(line) {
            Ok(kv) => out.push(kv),
            Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// File properties first, then `-X` flags, so flags win.
pub fn collect(
    file: Option<&Path>,
    flags: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut props = match file {
        Some(f) => read_properties(f)?,
        None => Vec::new(),
    };
    props.extend(flags.iter().cloned());
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse() {
        assert_eq!(
            parse_property("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_property("novalue").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.properties");
        std::fs::write(
            &f,
            "# comment\nsecurity.protocol=SASL_SSL\n\nlinger.ms = 50\n",
        )
        .unwrap();
        let props = collect(Some(&f), &[("linger.ms".into(), "5".into())]).unwrap();
        assert_eq!(props.len(), 3);
        assert_eq!(
            props.last().unwrap(),
            &("linger.ms".to_string(), "5".to_string())
        );
        std::fs::write(&f, "bad line\n").unwrap();
        assert!(read_properties(&f).unwrap_err().to_string().contains(":1:"));
    }
}
