//! TLS to PostgreSQL, as libpq does it. `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert` and `sslkey` come from
//! the URL's query (or a `key=value` connection string), else from `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`. As in libpq: `prefer` and `require` encrypt
//! without checking the server's certificate unless a root certificate is given (then they
//! check it like `verify-ca`); `verify-ca` checks the chain; `verify-full` the chain and
//! the host name. TLS is rustls (the broker's library too).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS if the server offers it (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing.
    Require,
    /// TLS with a certificate signed by the root certificate.
    VerifyCa,
    /// The same, for the host name connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<Self, String> {
        Ok(match v {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                "sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))
            }
        })
    }
}

/// The TLS settings of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of the certificates to trust.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: PEM client certificate chain.
    pub cert: Option<PathBuf>,
    /// `sslkey`: PEM client private key.
    pub key: Option<PathBuf>,
}

const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl TlsOptions {
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "sslmode" => self.mode = SslMode::parse(value)?,
            "sslrootcert" => self.root_cert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => {}
        }
        Ok(())
    }

    /// Fills what `given` (the keys the connection string set) leaves open from the
    /// `PGSSL*` variables.
    fn fill_from_env(&mut self, given: &[String]) -> Result<(), String> {
        for (key, var) in KEYS
            .iter()
            .zip(["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"])
        {
            if given.iter().any(|g| g == key) {
                continue;
            }
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                self.set(key, &v).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Splits the TLS settings out of a connection string (URL or `key=value` words), which
/// tokio-postgres would refuse; the `PGSSL*` variables fill in the rest.
pub fn split(conn: &str) -> Result<(String, TlsOptions), String> {
    let mut opts = TlsOptions::default();
    let mut given = Vec::new();
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let (base, query) = conn.split_once('?').unwrap_or((conn, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if KEYS.contains(&k) {
                opts.set(k, &percent_decode(v))?;
                given.push(k.to_string());
            } else {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for word in conn.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if KEYS.contains(&k) => {
                    opts.set(k, v.trim_matches('\''))?;
                    given.push(k.to_string());
                }
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    opts.fill_from_env(&given)?;
    Ok((rest, opts))
}

/// `%XX` escapes of a URL query value (paths with spaces, say).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The rustls configuration for `opts`, or `None` for `sslmode=disable`.
pub fn client_config(opts: &TlsOptions) -> Result<Option<rustls::ClientConfig>, String> {
    if opts.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match (&opts.root_cert, opts.mode) {
        (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err("sslmode=verify-ca and verify-full need sslrootcert (PGSSLROOTCERT): the CA certificate to trust".into())
        }
        (None, _) => Arc::new(Lenient {
            chain: None,
            provider,
        }),
        (Some(path), mode) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(path, "sslrootcert")? {
                roots.add(c).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    provider,
                })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("sslcert and sslkey go together".into()),
    };
    Ok(Some(config))
}

/// The lenient checks: `verify-ca` (`chain` given: the chain is checked, the name is
/// not), and `prefer`/`require` without a root certificate (`chain` none: encrypted, the
/// certificate unchecked, as libpq does). The handshake signatures are verified either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        inter: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end, inter, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_out_of_urls_and_connection_strings() {
        let (url, o) = split("postgres://u@db:5432/app?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem&application_name=a").unwrap();
        assert_eq!(url, "postgres://u@db:5432/app?application_name=a");
        assert_eq!(
            (o.mode, o.root_cert.as_deref()),
            (SslMode::VerifyFull, Some(Path::new("/etc/ca x.pem")))
        );
        let (kv, o) = split("host=db sslmode=require user=u").unwrap();
        assert_eq!((kv.as_str(), o.mode), ("host=db user=u", SslMode::Require));
        assert!(split("postgres://db/x?sslmode=sometimes").is_err());
        let (_, o) = split("postgres://db/x?sslmode=disable").unwrap();
        assert_eq!(client_config(&o).map(|c| c.is_none()), Ok(true));
        let full = TlsOptions {
            mode: SslMode::VerifyFull,
            ..TlsOptions::default()
        };
        assert!(client_config(&full).unwrap_err().contains("sslrootcert"));
    }
}
