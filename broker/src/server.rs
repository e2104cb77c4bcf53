//! The TCP listener: a connection limit, one task per connection, and graceful shutdown
//! by broadcast + drain (as in mini-redis).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};

use std::sync::atomic::Ordering;

use tokio_rustls::TlsAcceptor;

use crate::connection;

/// A client must finish its TLS handshake within this long.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
use crate::state::State;

/// Accepts connections until `shutdown` resolves, then stops accepting, tells every
/// connection to finish its in-flight requests, and waits until all have.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future,
) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    tokio::select! {
        _ = accept_loop(&listener, &state, tls.as_ref(), &limit, &notify_shutdown, &done_tx) => {}
        _ = shutdown => tracing::info!("shutting down: no new connections, draining in-flight requests"),
    }
    drop(listener);
    drop(notify_shutdown);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// The next connection. A failed accept (EMFILE and friends) is logged and retried after a
/// pause that doubles up to 1 s, rather than in a busy loop.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(s) => return s,
            Err(e) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::warn!("accept on {addr} failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn accept_loop(
    listener: &TcpListener,
    state: &Arc<State>,
    tls: Option<&TlsAcceptor>,
    limit: &Arc<Semaphore>,
    notify_shutdown: &broadcast::Sender<()>,
    done_tx: &mpsc::Sender<()>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (socket, peer) = accept(listener).await;
        tracing::debug!(%peer, "accepted connection");
        let state = state.clone();
        let shutdown = notify_shutdown.subscribe();
        let done = done_tx.clone();
        let _ = socket.set_nodelay(true);
        let tls = tls.cloned();
        tokio::spawn(async move {
            match tls {
                None => connection::serve(state, socket, peer, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => connection::serve(state, stream, peer, shutdown).await,
                        Ok(Err(e)) => {
                            state
                                .metrics
                                .connections_rejected
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "closing connection: TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            state
                                .metrics
                                .connections_rejected
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "closing connection: no TLS handshake within {TLS_HANDSHAKE:?}");
                        }
                    }
                }
            }
            drop(permit);
            drop(done);
        });
    }
}
