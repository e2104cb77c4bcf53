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
    let (cmd, m, top_name) = running_command(&root, matches);
    let mut out = Vec::new();
    for (key, value, strict) in entries(&table, top_name.as_deref(), path)? {
        let Some(arg) = find_arg(cmd, &key) else {
            if strict {
                bail!(
                    "config file {}: `{}` has no option `{key}`",
                    path.display(),
                    top_name.as_deref().unwrap_or("finstream")
                );
            }
            continue;
        };
        if matches!(
            m.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // a flag or an environment variable wins over the file
        }
        push_values(&mut out, arg, &key, value, path)?;
    }
    Ok(out)
}

/// The command that runs (e.g. `topics list`), its matches, and the top-level command's name.
fn running_command<'a>(
    root: &'a Command,
    matches: &'a ArgMatches,
) -> (&'a Command, &'a ArgMatches, Option<String>) {
    let (mut cmd, mut m) = (root, matches);
    let mut top_name = None;
    while let Some((name, sub)) = m.subcommand() {
        let Some(next) = cmd.find_subcommand(name) else {
            break;
        };
        top_name.get_or_insert_with(|| name.to_string());
        cmd = next;
        m = sub;
    }
    (cmd, m, top_name)
}

/// The file's settings that may apply: top-level keys (not strict: applied only where the
/// option exists), then the running command's table (strict).
fn entries<'a>(
    table: &'a toml::Table,
    top_name: Option<&str>,
    path: &Path,
) -> anyhow::Result<Vec<(String, &'a toml::Value, bool)>> {
    let mut entries: Vec<(String, &toml::Value, bool)> = table
        .iter()
        .filter(|(_, v)| !v.is_table())
        .map(|(k, v)| (k.clone(), v, false))
        .collect();
    if let Some(name) = top_name {
        match table.get(name) {
            Some(toml::Value::Table(t)) => {
                entries.extend(t.iter().map(|(k, v)| (k.clone(), v, true)));
            }
            Some(_) => bail!("config file {}: `{name}` must be a table", path.display()),
            None => {}
        }
    }
    Ok(entries)
}

/// The option a key names: its long name (`-` or `_`) or, for one letter, its short flag.
fn find_arg<'a>(cmd: &'a Command, key: &str) -> Option<&'a clap::Arg> {
    let id = key.replace('-', "_");
    let short = id.chars().next().filter(|_| id.chars().count() == 1);
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id || (short.is_some() && a.get_short() == short))
}

/// Appends the flag and its value(s) for one setting (an array repeats the flag).
fn push_values(
    out: &mut Vec<OsString>,
    arg: &clap::Arg,
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> anyhow::Result<()> {
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
    Ok(())
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
