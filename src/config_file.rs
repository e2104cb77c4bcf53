//! `--config FILE`: every command-line option can also come from a TOML file.
//!
//! ```toml
//! bootstrap_servers = "kafka-1:9092,kafka-2:9092"   # top level: any command that has it
//! database_url = "postgres://loader@db/finance"
//!
//! [consume]                                        # only `finstream consume`
//! group = "loaders"
//! stop_at_end = true
//! X = ["security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-256"]
//! ```
//!
//! Keys are the long flag names (`-` or `_`). Precedence: flag, then environment variable,
//! then the file, then the built-in default. A key in a `[command]` table that the command
//! does not have is an error; a top-level key is applied only where the option exists.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The arguments to append to `argv` so that the file's settings apply, for the command
/// `matches` was parsed from (`root` is the whole CLI definition).
pub fn args_from_file(
    path: &Path,
    root: &Command,
    matches: &ArgMatches,
) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut root = root.clone();
    root.build();
    // Walk down to the command that runs (e.g. `topics list`).
    let (mut cmd, mut m) = (&root, matches);
    let mut top_name = None;
    while let Some((name, sub)) = m.subcommand() {
        let Some(next) = cmd.find_subcommand(name) else {
            break;
        };
        top_name.get_or_insert_with(|| name.to_string());
        cmd = next;
        m = sub;
    }
    let mut entries: Vec<(String, &toml::Value, bool)> = table
        .iter()
        .filter(|(_, v)| !v.is_table())
        .map(|(k, v)| (k.clone(), v, false))
        .collect();
    if let Some(name) = &top_name {
        match table.get(name) {
            Some(toml::Value::Table(t)) => {
                entries.extend(t.iter().map(|(k, v)| (k.clone(), v, true)));
            }
            Some(_) => bail!("config file {}: `{name}` must be a table", path.display()),
            None => {}
        }
    }
    let mut out = Vec::new();
    for (key, value, strict) in entries {
        let id = key.replace('-', "_");
        let short = id.chars().next().filter(|_| id.chars().count() == 1);
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_id().as_str() == id || (short.is_some() && a.get_short() == short))
        else {
            if strict {
                bail!(
                    "config file {}: `{}` has no option `{key}`",
                    path.display(),
                    top_name.as_deref().unwrap_or("finstream")
                );
            }
            continue;
        };
        let id = arg.get_id().as_str();
        if matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // a flag or an environment variable wins over the file
        }
        let flag: OsString = match (arg.get_long(), arg.get_short()) {
            (Some(long), _) => format!("--{long}").into(),
            (None, Some(short)) => format!("-{short}").into(),
            (None, None) => bail!("config file {}: `{key}` is not an option", path.display()),
        };
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => bail!(
                    "config file {}: `{key}` must be a string, number or boolean",
                    path.display()
                ),
            };
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                match v {
                    toml::Value::Boolean(true) => out.push(flag.clone()),
                    toml::Value::Boolean(false) => {}
                    _ => bail!(
                        "config file {}: `{key}` must be true or false",
                        path.display()
                    ),
                }
            } else {
                out.push(flag.clone());
                out.push(text.into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        Command::new("finstream").subcommand(
            Command::new("consume")
                .arg(Arg::new("group").long("group").default_value("finstream"))
                .arg(Arg::new("topic").long("topic").env("FS_TEST_TOPIC_UNSET"))
                .arg(Arg::new("table").long("table").env("FS_TEST_TABLE_SET"))
                .arg(
                    Arg::new("stop_at_end")
                        .long("stop-at-end")
                        .action(ArgAction::SetTrue),
                )
                .arg(Arg::new("property").short('X').action(ArgAction::Append)),
        )
    }

    fn extra(file: &str, argv: &[&str]) -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f.toml");
        std::fs::write(&path, file)?;
        let matches = cli().try_get_matches_from(argv)?;
        Ok(args_from_file(&path, &cli(), &matches)?
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn file_fills_defaults_but_flags_and_environment_win() {
        std::env::set_var("FS_TEST_TABLE_SET", "from_env");
        let file = "group = \"g_top\"\nunknown_top = 1\n[consume]\ntopic = \"t\"\ntable = \"from_file\"\nstop-at-end = true\nX = [\"a=1\", \"b=2\"]\n";
        assert_eq!(
            extra(file, &["finstream", "consume"]).unwrap(),
            // (table = from_file is dropped: FS_TEST_TABLE_SET is set)
            [
                "--group",
                "g_top",
                "-X",
                "a=1",
                "-X",
                "b=2",
                "--stop-at-end",
                "--topic",
                "t"
            ]
        );
        // A flag on the command line is never overridden.
        let got = extra(
            file,
            &["finstream", "consume", "--group", "cli", "--topic", "x"],
        )
        .unwrap();
        assert!(
            !got.iter().any(|a| a == "--group" || a == "--topic"),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_keys_in_a_command_table_and_bad_types_are_errors() {
        let e = extra("[consume]\ngrup = \"x\"\n", &["finstream", "consume"]).unwrap_err();
        assert!(
            e.to_string().contains("`consume` has no option `grup`"),
            "{e}"
        );
        let e = extra(
            "[consume]\nstop_at_end = \"yes\"\n",
            &["finstream", "consume"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be true or false"), "{e}");
        let e = extra("consume = 3\n", &["finstream", "consume"]).unwrap_err();
        assert!(e.to_string().contains("must be a table"), "{e}");
        let e = extra("[consume\n", &["finstream", "consume"]).unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }
}
