//! SaslHandshake (v1) and SaslAuthenticate (v0-2). Unlike the other APIs these belong to a
//! connection: the [`Session`] is the connection's, so `connection.rs` routes them here.

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::sasl::{Session, MECHANISMS};

/// SaslHandshake: the mechanisms on offer, and whether the client's is one of them.
pub fn handshake(
    session: Option<&mut Session>,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let offered = match session {
        Some(s) => match s.handshake(req.mechanism.as_str()) {
            Ok(()) => return with_mechanisms(SaslHandshakeResponse::default()),
            Err(_) => MECHANISMS.to_vec(),
        },
        None => Vec::new(), // SASL is not enabled on this listener
    };
    SaslHandshakeResponse::default()
        .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
        .with_mechanisms(offered.into_iter().map(str_bytes).collect())
}

fn with_mechanisms(r: SaslHandshakeResponse) -> SaslHandshakeResponse {
    r.with_mechanisms(MECHANISMS.iter().copied().map(str_bytes).collect())
}

/// SaslAuthenticate: one step of the exchange. Returns the response and, once it succeeded,
/// the authenticated user; on failure the connection must be closed after the response.
pub fn authenticate(
    session: Option<&mut Session>,
    req: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, Result<Option<String>, String>) {
    let Some(session) = session else {
        let msg = "SASL is not enabled on this listener".to_string();
        return (failed(ResponseError::IllegalSaslState, &msg), Err(msg));
    };
    match session.authenticate(&req.auth_bytes) {
        Ok(reply) => (
            SaslAuthenticateResponse::default()
                .with_auth_bytes(reply.bytes.into())
                .with_session_lifetime_ms(0),
            Ok(reply.authenticated),
        ),
        Err(e) => (
            failed(ResponseError::SaslAuthenticationFailed, &e.to_string()),
            Err(e.to_string()),
        ),
    }
}

fn failed(code: ResponseError, msg: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(msg)))
}
