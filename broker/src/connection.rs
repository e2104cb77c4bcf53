//! One client connection: a reader that decodes requests and applies them in order, and a
//! writer that sends the responses in the same order (Kafka requires it), so a slow response
//! (a flush, a long poll) does not stop later requests from being decoded and applied.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, with_decode_allowance, Encodable,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{broadcast, mpsc};

use crate::api::{self, Reply};
use crate::config::MAX_UNAUTHENTICATED_REQUEST;
use crate::error::ConnectionError;
use crate::frame::{self, MIN_REQUEST_LEN};
use crate::metrics::BrokerMetrics;
use crate::sasl::Session;
use crate::state::State;

/// Responses computed or in progress, waiting for their turn on the socket.
const MAX_IN_FLIGHT: usize = 64;

struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    reply: Reply,
    started: std::time::Instant,
}

/// Decodes the request header. The frame is at least [`MIN_REQUEST_LEN`] bytes long.
pub fn decode_header(frame: &mut Bytes) -> Result<(RequestHeader, ApiKey), ConnectionError> {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let raw_version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| ConnectionError::UnsupportedApi {
        api_key: raw_key,
        api_version: raw_version,
    })?;
    let header =
        decode_request_header_from_buffer(frame).map_err(|e| ConnectionError::Malformed {
            api_key: raw_key,
            api_version: raw_version,
            detail: format!("request header: {e}"),
        })?;
    Ok((header, key))
}

/// Encodes a response frame: length, header, body.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, ConnectionError> {
    // A fetch response is mostly its record bytes: size the buffer once rather than
    // growing it by doubling (each growth copies everything so far).
    let capacity = match body {
        ResponseKind::Fetch(fetch) => 256 + fetch.compute_size(version).unwrap_or(0),
        _ => 256,
    };
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| ConnectionError::Encode(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| ConnectionError::Encode(e.to_string()))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Serves one connection (plain TCP or TLS) until EOF, an error or shutdown. Errors close
/// only this connection and are logged with the peer address. When the broker has SASL
/// users, nothing but ApiVersions and the SASL exchange is served before authentication.
pub async fn serve<S>(
    state: Arc<State>,
    socket: S,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let metrics = state.metrics.clone();
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let mut sasl = state
        .config
        .sasl
        .enabled()
        .then(|| Session::new(state.config.sasl.clone()));
    let (mut reader, writer) = tokio::io::split(socket);
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_loop(writer, rx, peer, metrics.clone()));
    loop {
        let authenticated = sasl.as_ref().is_none_or(|s| s.user().is_some());
        let read = next_frame(&mut reader, &state, authenticated, peer);
        let frame = tokio::select! {
            f = read => f,
            _ = shutdown.recv() => break,
        };
        let Some(frame) = frame else { break };
        let started = std::time::Instant::now();
        let frame::Frame {
            bytes: mut frame,
            allowance,
            grant,
        } = frame;
        let decoded = with_decode_allowance(allowance, || {
            decode_and_apply(&state, &mut frame, sasl.as_mut(), peer)
        });
        drop(grant); // decoded and applied: what is left of the request is the reply's
        let applied = match decoded {
            Ok(applied) => applied,
            Err((e, client_id)) => {
                metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, client_id = client_id.as_deref().unwrap_or(""), "closing connection: {e}");
                break;
            }
        };
        let close_after = applied.close_after;
        let pending = Pending {
            correlation_id: applied.header.correlation_id,
            api_key: applied.api_key,
            reply: applied.reply,
            started,
        };
        if tx.send(pending).await.is_err() {
            break; // writer failed; it logged why
        }
        if close_after {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            break; // failed authentication: the answer goes out, then the connection closes
        }
    }
    drop(tx);
    let _ = writer.await;
    metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// The next request frame, within the idle timeout and the size limits (small ones before
/// SASL authentication). `None` when the connection is to close (logged).
async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    state: &State,
    authenticated: bool,
    peer: SocketAddr,
) -> Option<frame::Frame> {
    let c = &state.config;
    // --max-request-bytes bounds every request; other APIs have a lower bound of their own.
    let limits = if authenticated {
        frame::Limits {
            produce: c.max_request_bytes,
            other: c.max_other_request_bytes.min(c.max_request_bytes),
        }
    } else {
        frame::Limits::uniform(MAX_UNAUTHENTICATED_REQUEST)
    };
    let read = frame::read_frame_within(reader, limits, &state.budget);
    match tokio::time::timeout(c.idle_timeout, read).await {
        Ok(Ok(Some(f))) => {
            debug_assert!(f.bytes.len() >= MIN_REQUEST_LEN);
            let len = f.bytes.len() as u64 + 4;
            state.metrics.bytes_in.fetch_add(len, Ordering::Relaxed);
            Some(f)
        }
        Ok(Ok(None)) => {
            tracing::debug!(%peer, "client closed the connection");
            None
        }
        // A client going away mid-frame is its business, not an error of the broker.
        Ok(Err(e @ (ConnectionError::Io(_) | ConnectionError::Truncated { .. }))) => {
            tracing::debug!(%peer, "closing connection: {e}");
            None
        }
        Ok(Err(e)) => {
            state
                .metrics
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "closing connection: {e}");
            None
        }
        Err(_) => {
            let idle = ConnectionError::Idle(c.idle_timeout);
            tracing::info!(%peer, "closing connection: {idle}");
            None
        }
    }
}

/// A request decoded and applied.
struct Applied {
    header: RequestHeader,
    api_key: ApiKey,
    reply: Reply,
    /// Close the connection once the reply is out (failed authentication).
    close_after: bool,
}

/// Decodes one request and applies it. On error, also returns the client id when the
/// header could be read, for the log.
fn decode_and_apply(
    state: &Arc<State>,
    frame: &mut Bytes,
    sasl: Option<&mut Session>,
    peer: SocketAddr,
) -> Result<Applied, (ConnectionError, Option<String>)> {
    let (header, api_key) = decode_header(frame).map_err(|e| (e, None))?;
    let authenticated = sasl.as_ref().is_none_or(|s| s.user().is_some());
    let body = std::mem::take(frame);
    let result = if matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        sasl_step(&header, api_key, body, sasl, peer)
    } else if !authenticated && api_key != ApiKey::ApiVersions {
        Err(ConnectionError::Unauthenticated(api_key))
    } else {
        api::dispatch(state, &header, body, peer).map(|reply| (reply, false))
    };
    match result {
        Ok((reply, close_after)) => Ok(Applied {
            header,
            api_key,
            reply,
            close_after,
        }),
        Err(e) => Err((e, header.client_id.as_deref().map(str::to_string))),
    }
}

/// A SaslHandshake or SaslAuthenticate request: (reply, close the connection after it).
fn sasl_step(
    header: &RequestHeader,
    key: ApiKey,
    mut body: Bytes,
    session: Option<&mut Session>,
    peer: SocketAddr,
) -> Result<(Reply, bool), ConnectionError> {
    let version = header.request_api_version;
    let in_range = api::supported(key).is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    if !in_range {
        return Err(ConnectionError::UnsupportedApi {
            api_key: header.request_api_key,
            api_version: version,
        });
    }
    let ready = |r: ResponseKind| Reply::Ready(Box::new(r), version);
    match api::decode(header, key, &mut body)? {
        RequestKind::SaslHandshake(req) => {
            Ok((ready(api::sasl::handshake(session, req).into()), false))
        }
        RequestKind::SaslAuthenticate(req) => {
            let (resp, outcome) = api::sasl::authenticate(session, req);
            let close = match outcome {
                Ok(Some(user)) => {
                    tracing::info!(%peer, %user, "authenticated");
                    false
                }
                Ok(None) => false,
                Err(why) => {
                    tracing::warn!(%peer, "closing connection: {why}");
                    true
                }
            };
            Ok((ready(resp.into()), close))
        }
        _ => Err(ConnectionError::UnsupportedApi {
            api_key: header.request_api_key,
            api_version: version,
        }),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Pending>,
    peer: SocketAddr,
    metrics: Arc<BrokerMetrics>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(p) = rx.recv().await {
        let (body, version) = match p.reply {
            Reply::Nothing => {
                metrics.request(p.api_key, p.started.elapsed());
                continue;
            }
            Reply::Ready(body, v) => (*body, v),
            Reply::Later(fut, v) => (fut.await, v),
        };
        let frame = match encode_response(p.correlation_id, p.api_key, version, &body) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(%peer, api = ?p.api_key, version, "{e}");
                return;
            }
        };
        if let Err(e) = out.write_all(&frame).await {
            tracing::debug!(%peer, "write failed: {e}");
            return;
        }
        metrics
            .bytes_out
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        metrics.request(p.api_key, p.started.elapsed());
        if rx.is_empty() {
            if let Err(e) = out.flush().await {
                tracing::debug!(%peer, "write failed: {e}");
                return;
            }
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
