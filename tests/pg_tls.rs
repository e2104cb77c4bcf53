//! PostgreSQL over TLS, as libpq does it: a private cluster with `ssl=on` and a certificate
//! from a throwaway CA; every `sslmode`, a wrong CA, a wrong host name, the `PGSSL*`
//! variables, and a client certificate. One test: it sets process-wide variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use finstream_consumer::cluster::PrivateCluster;
use finstream_consumer::db::{self, DbError};

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA: `<name>.crt`, `<name>.key`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subj = format!("/CN={name}");
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subj,
            "-keyout", &key, "-out", &crt,
        ],
        dir,
    );
    dir.join(crt)
}

/// A certificate for `cn` (and `san`, if given) signed by CA `ca`: (cert, key).
fn signed(dir: &Path, ca: &str, name: &str, cn: &str, san: Option<&str>) -> (PathBuf, PathBuf) {
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
        ],
        dir,
    );
    // an extension makes it an X.509 v3 certificate, which rustls requires
    let mut extensions = String::from("basicConstraints=CA:FALSE\n");
    if let Some(san) = san {
        extensions.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
        dir,
    );
    (dir.join(crt), dir.join(key))
}

/// Connects with `url` (or the `PG*` variables); whether the session is encrypted.
async fn connect(url: Option<&str>) -> Result<bool, DbError> {
    let target = finstream_consumer::pg_config(url).map_err(|detail| DbError::Tls {
        host: "?".into(),
        detail,
    })?;
    let client = db::connect(&target).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(DbError::Unavailable)?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_certificates_and_errors_as_libpq() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let good_ca = ca(&certs, "ca");
    let wrong_ca = ca(&certs, "other-ca");
    let (server_crt, server_key) =
        signed(&certs, "ca", "server", "localhost", Some("DNS:localhost"));
    let (client_crt, client_key) = signed(&certs, "ca", "client", "postgres", None);
    let cluster = PrivateCluster::start(&dir.path().join("pg")).expect("a private cluster");
    cluster
        .enable_ssl(&server_crt, &server_key, Some(&good_ca))
        .expect("ssl on");
    let port = cluster
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let url = |host: &str, q: &str| format!("postgres://postgres@{host}:{port}/postgres{q}");
    let root = |p: &Path| p.to_str().unwrap().to_string();

    assert!(
        connect(Some(&url("127.0.0.1", "?sslmode=require")))
            .await
            .unwrap(),
        "require: encrypted"
    );
    assert!(
        !connect(Some(&url("127.0.0.1", "?sslmode=disable")))
            .await
            .unwrap(),
        "disable: plain"
    );
    assert!(
        connect(Some(&url("127.0.0.1", ""))).await.unwrap(),
        "prefer (the default) encrypts"
    );
    let full = format!("?sslmode=verify-full&sslrootcert={}", root(&good_ca));
    assert!(
        connect(Some(&url("localhost", &full))).await.unwrap(),
        "verify-full with the right CA"
    );

    let wrong = format!("?sslmode=verify-full&sslrootcert={}", root(&wrong_ca));
    let e = connect(Some(&url("localhost", &wrong))).await.unwrap_err();
    assert!(matches!(e, DbError::Tls { .. }) && !e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("UnknownIssuer"),
        "a wrong CA is named: {e}"
    );
    let e = connect(Some(&url("127.0.0.1", &full))).await.unwrap_err();
    assert!(
        e.to_string().contains("not valid for name"),
        "a wrong host name is named: {e}"
    );
    let ca_only = format!("?sslmode=verify-ca&sslrootcert={}", root(&good_ca));
    assert!(
        connect(Some(&url("127.0.0.1", &ca_only))).await.unwrap(),
        "verify-ca ignores the name"
    );

    // libpq's variables
    for (k, v) in [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGSSLMODE", "verify-full"),
    ] {
        std::env::set_var(k, v);
    }
    std::env::set_var("PGSSLROOTCERT", &good_ca);
    let from_env = connect(None).await;
    std::env::set_var("PGSSLROOTCERT", &wrong_ca);
    let wrong_from_env = connect(None).await;
    for k in ["PGHOST", "PGPORT", "PGUSER", "PGSSLMODE", "PGSSLROOTCERT"] {
        std::env::remove_var(k);
    }
    assert!(from_env.unwrap(), "PGSSLMODE and PGSSLROOTCERT apply");
    assert!(wrong_from_env.is_err());

    // a server that wants a client certificate
    cluster
        .prepend_hba("hostssl all all 127.0.0.1/32 trust clientcert=verify-full")
        .unwrap();
    assert!(
        connect(Some(&url("localhost", &full))).await.is_err(),
        "no client certificate"
    );
    let with_cert = format!(
        "{full}&sslcert={}&sslkey={}",
        root(&client_crt),
        root(&client_key)
    );
    assert!(
        connect(Some(&url("localhost", &with_cert))).await.unwrap(),
        "with the client certificate"
    );
}
