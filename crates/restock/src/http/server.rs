//! The accept loop: HTTP/1.1 connections served by hyper with a header-read timeout
//! (which also closes idle keep-alive connections) and a cap on open connections.
//!
//! At the cap the connection idle longest — no request in progress: a client that
//! connected and sent nothing, trickles its request head, or keeps an idle keep-alive —
//! is closed to make room for the new one. A flood of idle or trickling clients
//! therefore cannot lock others out, and the process never nears its descriptor
//! limit. Requests in progress are never cut.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// One open connection, as the cap sees it.
struct ConnState {
    /// Requests being served on it now.
    busy: AtomicUsize,
    /// When it last became idle (ms since the server started).
    idle_since_ms: AtomicU64,
    close: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnState>>,
}

impl Registry {
    /// Closes the connection idle longest; false if every connection is busy.
    fn evict_idlest(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0 && !c.close.is_cancelled())
            .min_by_key(|(_, c)| c.idle_since_ms.load(Ordering::SeqCst))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.conns.get(&id)) {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    fn open(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !c.close.is_cancelled())
            .count()
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets the
/// requests in progress finish (up to the request timeout) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let started = Instant::now();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let header_timeout = Duration::from_secs(config.header_read_timeout_secs);
    let max = config.max_connections;
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: back off
                    // briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(started.elapsed().as_millis() as u64),
            close: CancellationToken::new(),
        });
        let id = {
            let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
            if reg.open() >= max && !reg.evict_idlest() {
                // Every connection is serving a request: refuse this one rather than
                // exceed the cap.
                tracing::warn!(open = max, "connection cap reached; refusing a connection");
                continue;
            }
            reg.next_id += 1;
            let id = reg.next_id;
            reg.conns.insert(id, state.clone());
            id
        };
        let router = router.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            serve_connection(
                stream,
                peer,
                router,
                state,
                header_timeout,
                started,
                shutdown,
            )
            .await;
            registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .conns
                .remove(&id);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    state: Arc<ConnState>,
    header_timeout: Duration,
    started: Instant,
    shutdown: CancellationToken,
) {
    let counted = state.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let state = counted.clone();
        state.busy.fetch_add(1, Ordering::SeqCst);
        async move {
            let guard = BusyGuard { state, started };
            let resp = router.oneshot(req.map(axum::body::Body::new)).await;
            drop(guard);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = state.close.cancelled() => {
            if state.busy.load(Ordering::SeqCst) == 0 {
                // Evicted while idle: close at once to free the descriptor.
                return;
            }
        }
        _ = shutdown.cancelled() => {}
    }
    // Shutting down (or evicted just as a request arrived): finish the request in
    // progress, if any, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
}

/// Marks the connection idle again when its request's answer has been produced.
struct BusyGuard {
    state: Arc<ConnState>,
    started: Instant,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.state
            .idle_since_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.state.busy.fetch_sub(1, Ordering::SeqCst);
    }
}
