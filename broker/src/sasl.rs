//! SASL authentication, sans-io: PLAIN (RFC 4616) and SCRAM-SHA-256 (RFC 5802/7677), the
//! mechanisms librdkafka and kcat speak. The connection feeds each SaslAuthenticate token to
//! a [`Session`] and sends back what it returns. Passwords are never kept: SCRAM credentials
//! (salt, StoredKey, ServerKey) are derived once at start-up, and PLAIN is checked against
//! them too.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Mechanisms offered, in SaslHandshake order.
pub const MECHANISMS: [&str; 2] = ["SCRAM-SHA-256", "PLAIN"];
const ITERATIONS: u32 = 4096;

/// Why authentication failed (sent to the client as SASL_AUTHENTICATION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("authentication failed: invalid username or password")]
    BadCredentials,
    /// The client's message does not follow the mechanism's grammar.
    #[error("authentication failed: malformed {0} message")]
    Malformed(&'static str),
    /// A mechanism this broker does not offer.
    #[error("unsupported SASL mechanism {0}")]
    UnsupportedMechanism(String),
}

/// One user's SCRAM-SHA-256 credentials.
#[derive(Clone)]
struct Credential {
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Credential {
    fn derive(password: &str, salt: Vec<u8>) -> Credential {
        // RFC 5802's Hi() is PBKDF2-HMAC-SHA256 with one 32-byte block.
        let salted: [u8; 32] =
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), &salt, ITERATIONS);
        let client_key = hmac(&salted, b"Client Key");
        Credential {
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
            salt,
        }
    }
}

/// The users allowed in, shared by all connections.
#[derive(Clone, Default)]
pub struct Users {
    creds: Arc<HashMap<String, Credential>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.creds.len())
            .finish()
    }
}

impl Users {
    /// Derives credentials for `(user, password)` pairs (4096 PBKDF2 rounds each).
    pub fn new(pairs: &[(String, String)]) -> Users {
        let creds = pairs
            .iter()
            .map(|(u, p)| {
                let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
                (u.clone(), Credential::derive(p, salt))
            })
            .collect();
        Users {
            creds: Arc::new(creds),
        }
    }

    /// Whether SASL is required (at least one user configured).
    pub fn enabled(&self) -> bool {
        !self.creds.is_empty()
    }

    /// Parses a users file: `user:password` per line, `#` comments.
    pub fn parse_file(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                    out.push((u.to_string(), p.to_string()))
                }
                _ => return Err(format!("line {}: expected user:password", i + 1)),
            }
        }
        Ok(out)
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        match self.creds.get(user) {
            Some(c) => {
                let fresh = Credential::derive(password, c.salt.clone());
                constant_time_eq(&fresh.stored_key, &c.stored_key)
            }
            None => false,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a connection's authentication stands.
enum Step {
    /// SaslHandshake not seen yet.
    Start,
    Plain,
    ScramFirst,
    ScramFinal {
        user: String,
        nonce: String,
        gs2_header: String,
        auth_prefix: String,
    },
    Done(String),
    Failed,
}

/// One connection's SASL exchange.
pub struct Session {
    users: Users,
    step: Step,
}

/// What to send back for one SaslAuthenticate token.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The server's SASL message (empty for PLAIN).
    pub bytes: Vec<u8>,
    /// The user, once authenticated.
    pub authenticated: Option<String>,
}

impl Session {
    /// A fresh session for a new connection.
    pub fn new(users: Users) -> Session {
        Session {
            users,
            step: Step::Start,
        }
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.step {
            Step::Done(u) => Some(u),
            _ => None,
        }
    }

    /// SaslHandshake: choose the mechanism.
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), SaslError> {
        self.step = match mechanism {
            "PLAIN" => Step::Plain,
            "SCRAM-SHA-256" => Step::ScramFirst,
            other => return Err(SaslError::UnsupportedMechanism(other.to_string())),
        };
        Ok(())
    }

    /// SaslAuthenticate: one client token in, one server token out.
    pub fn authenticate(&mut self, token: &[u8]) -> Result<Reply, SaslError> {
        let step = std::mem::replace(&mut self.step, Step::Failed);
        let result = self.step_with(step, token);
        if result.is_err() {
            self.step = Step::Failed;
        }
        result
    }

    fn step_with(&mut self, step: Step, token: &[u8]) -> Result<Reply, SaslError> {
        match step {
            Step::Plain => self.plain(token),
            Step::ScramFirst => self.scram_first(token),
            Step::ScramFinal {
                user,
                nonce,
                gs2_header,
                auth_prefix,
            } => self.scram_final(token, user, &nonce, &gs2_header, &auth_prefix),
            Step::Start => Err(SaslError::Malformed(
                "SaslAuthenticate before SaslHandshake",
            )),
            Step::Done(_) | Step::Failed => Err(SaslError::Malformed("extra SaslAuthenticate")),
        }
    }

    /// PLAIN: `[authzid] NUL authcid NUL passwd`.
    fn plain(&mut self, token: &[u8]) -> Result<Reply, SaslError> {
        let text = std::str::from_utf8(token).map_err(|_| SaslError::Malformed("PLAIN"))?;
        let mut parts = text.split('\0');
        let (_authzid, user, password) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(u), Some(p), None) => (a, u, p),
                _ => return Err(SaslError::Malformed("PLAIN")),
            };
        if !self.users.check_password(user, password) {
            return Err(SaslError::BadCredentials);
        }
        self.step = Step::Done(user.to_string());
        Ok(Reply {
            bytes: Vec::new(),
            authenticated: Some(user.to_string()),
        })
    }

    /// SCRAM client-first: answers with the server's nonce, the salt and the iterations.
    fn scram_first(&mut self, token: &[u8]) -> Result<Reply, SaslError> {
        let bad = || SaslError::Malformed("SCRAM client-first");
        let text = std::str::from_utf8(token).map_err(|_| bad())?;
        let (gs2_header, bare) = split_gs2(text)?;
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(unescape_name(v)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v.to_string());
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err(bad());
        };
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err(bad());
        }
        // Unknown users get a made-up salt, so the exchange looks the same.
        let salt = self
            .users
            .creds
            .get(&user)
            .map(|c| c.salt.clone())
            .unwrap_or_else(|| Sha256::digest(user.as_bytes())[..16].to_vec());
        let nonce = format!(
            "{client_nonce}{}",
            B64.encode(uuid::Uuid::new_v4().as_bytes())
        );
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(&salt));
        self.step = Step::ScramFinal {
            user,
            nonce,
            gs2_header: gs2_header.to_string(),
            auth_prefix: format!("{bare},{server_first}"),
        };
        Ok(Reply {
            bytes: server_first.into_bytes(),
            authenticated: None,
        })
    }

    /// SCRAM client-final: checks the proof, answers with the server's signature.
    fn scram_final(
        &mut self,
        token: &[u8],
        user: String,
        nonce: &str,
        gs2_header: &str,
        auth_prefix: &str,
    ) -> Result<Reply, SaslError> {
        let text =
            std::str::from_utf8(token).map_err(|_| SaslError::Malformed("SCRAM client-final"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(SaslError::Malformed("SCRAM client-final"))?;
        let mut channel = None;
        let mut got_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                got_nonce = Some(v);
            }
        }
        if channel != Some(B64.encode(gs2_header.as_bytes()).as_str()) {
            return Err(SaslError::Malformed("SCRAM client-final (channel binding)"));
        }
        // librdkafka sends its own nonce again in front of the combined one; Kafka accepts
        // any nonce that ends with the combined one, and so does this broker.
        if !got_nonce.is_some_and(|n| n.ends_with(nonce)) {
            return Err(SaslError::Malformed("SCRAM client-final (nonce)"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| SaslError::Malformed("SCRAM client-final (proof)"))?;
        let cred = self
            .users
            .creds
            .get(&user)
            .ok_or(SaslError::BadCredentials)?;
        let auth_message = format!("{auth_prefix},{without_proof}");
        let signature = hmac(&cred.stored_key, auth_message.as_bytes());
        if proof.len() != 32 {
            return Err(SaslError::BadCredentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&stored, &cred.stored_key) {
            return Err(SaslError::BadCredentials);
        }
        let server_signature = hmac(&cred.server_key, auth_message.as_bytes());
        self.step = Step::Done(user.clone());
        Ok(Reply {
            bytes: format!("v={}", B64.encode(server_signature)).into_bytes(),
            authenticated: Some(user),
        })
    }
}

/// Splits `gs2-header` ("n,," or "n,a=authzid,"; "y,," too; channel binding "p=" refused)
/// from `client-first-message-bare`.
fn split_gs2(text: &str) -> Result<(&str, &str), SaslError> {
    let bad = SaslError::Malformed("SCRAM client-first");
    let first = text.find(',').ok_or(bad.clone())?;
    let flag = &text[..first];
    if flag != "n" && flag != "y" {
        return Err(bad);
    }
    let second = text[first + 1..].find(',').ok_or(bad)? + first + 1;
    Ok((&text[..=second], &text[second + 1..]))
}

/// saslname: "=2C" is ',' and "=3D" is '='; any other '=' is an error.
fn unescape_name(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed("SCRAM username")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::new(&[
            ("alice".into(), "s3cret".into()),
            ("b,o=b".into(), "pw".into()),
        ])
    }

    /// A SCRAM-SHA-256 client, as RFC 5802 describes it.
    fn scram_client(session: &mut Session, user: &str, password: &str) -> Result<Reply, SaslError> {
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={escaped},r=clientnonce123");
        let first = session.authenticate(format!("n,,{bare}").as_bytes())?;
        let server_first = String::from_utf8(first.bytes).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attr in server_first.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).unwrap();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            }
        }
        assert!(nonce.starts_with("clientnonce123") && nonce.len() > 14);
        let salted: [u8; 32] =
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth = format!("{bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let reply =
            session.authenticate(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())?;
        let server_key = hmac(&salted, b"Server Key");
        let expected = format!("v={}", B64.encode(hmac(&server_key, auth.as_bytes())));
        assert_eq!(
            String::from_utf8(reply.bytes.clone()).unwrap(),
            expected,
            "server proves it knows the key"
        );
        Ok(reply)
    }

    #[test]
    fn scram_sha_256_accepts_the_right_password_only() {
        let u = users();
        let mut s = Session::new(u.clone());
        s.handshake("SCRAM-SHA-256").unwrap();
        let r = scram_client(&mut s, "alice", "s3cret").unwrap();
        assert_eq!(r.authenticated.as_deref(), Some("alice"));
        assert_eq!(s.user(), Some("alice"));

        let mut s = Session::new(u.clone());
        s.handshake("SCRAM-SHA-256").unwrap();
        assert_eq!(
            scram_client(&mut s, "alice", "wrong").unwrap_err(),
            SaslError::BadCredentials
        );
        assert_eq!(s.user(), None);

        let mut s = Session::new(u.clone());
        s.handshake("SCRAM-SHA-256").unwrap();
        assert_eq!(
            scram_client(&mut s, "mallory", "x").unwrap_err(),
            SaslError::BadCredentials
        );

        let mut s = Session::new(u);
        s.handshake("SCRAM-SHA-256").unwrap();
        assert!(scram_client(&mut s, "b,o=b", "pw").is_ok(), "escaped names");
    }

    #[test]
    fn plain_and_malformed_messages() {
        let mut s = Session::new(users());
        s.handshake("PLAIN").unwrap();
        assert_eq!(
            s.authenticate(b"\0alice\0s3cret")
                .unwrap()
                .authenticated
                .as_deref(),
            Some("alice")
        );
        let mut s = Session::new(users());
        s.handshake("PLAIN").unwrap();
        assert_eq!(
            s.authenticate(b"\0alice\0nope").unwrap_err(),
            SaslError::BadCredentials
        );
        assert!(
            s.authenticate(b"\0alice\0s3cret").is_err(),
            "no second chance"
        );
        let mut s = Session::new(users());
        assert!(s.handshake("GSSAPI").is_err());
        assert!(
            s.authenticate(b"x").is_err(),
            "authenticate before handshake"
        );
        for garbage in [
            &b""[..],
            b"p=tls-unique,,n=a,r=x",
            b"n,,",
            b"n,,n=alice",
            b"n,,n=a=1,r=x",
            b"\xff",
        ] {
            let mut s = Session::new(users());
            s.handshake("SCRAM-SHA-256").unwrap();
            assert!(s.authenticate(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn users_file() {
        assert_eq!(
            Users::parse_file("# users\nalice:s3cret\n\nbob:pa:ss\n").unwrap(),
            vec![
                ("alice".into(), "s3cret".into()),
                ("bob".into(), "pa:ss".into())
            ]
        );
        assert!(Users::parse_file("nocolon\n")
            .unwrap_err()
            .contains("line 1"));
    }
}
