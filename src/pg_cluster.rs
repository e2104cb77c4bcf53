//! A private PostgreSQL cluster under the data directory, for `all-in-one` on machines with
//! PostgreSQL installed but no server answering: `initdb` once, `pg_ctl start` on a free
//! port, `pg_ctl stop` at exit. As root it runs as the `postgres` user (PostgreSQL refuses
//! to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").exists() && d.join("pg_ctl").exists() {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivateCluster {
    /// Whether PostgreSQL server binaries are installed.
    pub fn available() -> bool {
        find_bin_dir().is_some()
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

    /// Initialises (first time) and starts the cluster in `data_dir/postgres`.
    pub fn start(data_dir: &Path) -> anyhow::Result<PrivateCluster> {
        let bin =
            find_bin_dir().context("PostgreSQL server binaries (initdb, pg_ctl) not found")?;
        let dir = std::path::absolute(data_dir.join("postgres"))?;
        let as_postgres = is_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = PrivateCluster {
            bin,
            dir,
            as_postgres,
            port,
        };
        std::fs::create_dir_all(&cluster.dir)?;
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            // The postgres user must be able to reach and own its directory.
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o711))?;
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", cluster.dir.display());
            }
        }
        if !cluster.dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.dir.display(), "creating a private PostgreSQL cluster");
            let out = cluster
                .command("initdb")
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
                .arg(&cluster.dir)
                .output()?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            cluster.port,
            cluster.dir.display()
        );
        let out = cluster
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(&cluster.dir)
            .args(["-o", &opts, "-l"])
            .arg(cluster.dir.join("server.log"))
            .arg("start")
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tracing::info!(port = cluster.port, "private PostgreSQL cluster started");
        Ok(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(&self.dir)
            .arg("stop")
            .output();
    }
}
