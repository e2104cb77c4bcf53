//! A private PostgreSQL cluster in a directory of its own: `initdb` once, `pg_ctl start` on
//! a free port of 127.0.0.1, `pg_ctl stop` when dropped. For `all-in-one` on machines with
//! PostgreSQL installed but no server answering, and for tests that restart or crash
//! PostgreSQL. As root it runs as the `postgres` user (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No `initdb` and `pg_ctl` on the PATH or under /usr/lib/postgresql.
    #[error("PostgreSQL server binaries (initdb, pg_ctl) not found")]
    NotInstalled,
    /// A command could not run or failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its output or error.
        detail: String,
    },
    /// The cluster directory could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running private cluster; stopped (fast shutdown) when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    /// The port it listens on.
    pub port: u16,
}

/// The directory of the newest installed PostgreSQL's `initdb` and `pg_ctl`: the PATH
/// first, then /usr/lib/postgresql/<version>/bin, highest version by number (not by name:
/// 16 is newer than 9.6).
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            return Some(d);
        }
    }
    let version = |p: &PathBuf| -> Vec<u32> {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .map(|v| v.split('.').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| has_tools(b))
        .max_by_key(version)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl PrivateCluster {
    /// Whether PostgreSQL server binaries are installed.
    pub fn available() -> bool {
        find_bin_dir().is_some()
    }

    /// Initialises (the first time) and starts a cluster in `dir`.
    pub fn start(dir: &Path) -> Result<PrivateCluster, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::NotInstalled)?;
        let dir = std::path::absolute(dir).map_err(io_err(dir))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io_err(&dir))?
            .port();
        let cluster = PrivateCluster {
            bin,
            as_postgres: is_root(),
            dir,
            port,
        };
        cluster.prepare_dir()?;
        if !cluster.dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.dir.display(), "creating a private PostgreSQL cluster");
            let mut initdb = cluster.command("initdb");
            initdb
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&cluster.dir);
            run(&mut initdb, "initdb")?;
        }
        cluster.ctl("start", "fast")?;
        tracing::info!(port = cluster.port, "private PostgreSQL cluster started");
        Ok(cluster)
    }

    /// Creates the directory; as root, gives it to the postgres user and lets it reach it.
    fn prepare_dir(&self) -> Result<(), ClusterError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        if !self.as_postgres {
            return Ok(());
        }
        use std::os::unix::fs::PermissionsExt;
        if let Some(parent) = self.dir.parent() {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))
                .map_err(io_err(parent))?;
        }
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(&self.dir);
        run(&mut chown, "chown").map(|_| ())
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// `pg_ctl ACTION -m MODE`, waiting for it. `stop` in mode `immediate` is a crash: no
    /// checkpoint, and transactions committed asynchronously but not yet in the WAL on disk
    /// are lost.
    pub fn ctl(&self, action: &str, mode: &str) -> Result<(), ClusterError> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let mut c = self.command("pg_ctl");
        c.args(["-w", "-m", mode, "-D"])
            .arg(&self.dir)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("server.log"))
            .arg(action);
        run(&mut c, &format!("pg_ctl {action}")).map(|_| ())
    }

    /// Turns TLS on (a restart): `cert` and `key` (PEM) become the server's, and client
    /// certificates signed by `ca`, if given, are accepted.
    pub fn enable_ssl(
        &self,
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
    ) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let mut conf =
            String::from("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        let mut files = vec![(cert, "server.crt"), (key, "server.key")];
        if let Some(ca) = ca {
            files.push((ca, "root.crt"));
            conf.push_str("ssl_ca_file = 'root.crt'\n");
        }
        for (from, name) in files {
            let to = self.dir.join(name);
            std::fs::copy(from, &to).map_err(io_err(&to))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&to))?;
        }
        self.append_config("postgresql.conf", &conf, false)?;
        self.ctl("restart", "fast")
    }

    /// Puts `line` first in `pg_hba.conf` (the first matching line decides) and reloads.
    pub fn prepend_hba(&self, line: &str) -> Result<(), ClusterError> {
        self.append_config("pg_hba.conf", &format!("{line}\n"), true)?;
        self.ctl("reload", "fast")
    }

    fn append_config(&self, name: &str, text: &str, first: bool) -> Result<(), ClusterError> {
        let path = self.dir.join(name);
        let old = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let new = if first {
            format!("{text}{old}")
        } else {
            format!("{old}{text}")
        };
        std::fs::write(&path, new).map_err(io_err(&path))?;
        if self.as_postgres {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&self.dir);
            run(&mut chown, "chown")?;
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

fn run(c: &mut Command, what: &str) -> Result<Output, ClusterError> {
    let out = c.output().map_err(|e| ClusterError::Command {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            what: what.to_string(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.ctl("stop", "fast");
    }
}
