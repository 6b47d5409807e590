//! The daemon's HTTP listener: `/healthz`, `/readyz` and `/metrics`.
//!
//! It runs on its own thread with a small tokio runtime, so that a slow
//! scrape never delays a batch and a busy worker never delays a probe. It
//! binds before the workers start, so that a bad or busy address stops
//! `dqmon run` at once with a clear error.
//!
//! It serves observations only: it must not change any state, and it
//! shows nothing but what [`super::health`] and [`super::metrics`] hold
//! (names, paths, counts; never data values or secrets).

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use super::health::Health;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr} for /healthz, /readyz and /metrics ({source}); choose another address with `server.listen` in the config or `--listen`, or stop the process that holds it"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP listener's runtime or thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A running listener; dropping it stops the listener.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The routes, for the listener and for tests.
pub fn router(health: &'static Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(health)))
        .route("/metrics", get(metrics))
}

async fn readyz(health: &'static Health) -> Response {
    // Probing the state folders is file I/O: keep it off the reactor.
    let readiness = match tokio::task::spawn_blocking(move || health.readiness()).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the readiness check failed: {e}\n"),
            )
                .into_response();
        }
    };
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_string_pretty(&readiness).expect("readiness serializes");
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::metrics::render(),
    )
        .into_response()
}

/// Bind `addr` and serve the routes on a thread of their own until the
/// handle is dropped. Installs the metrics recorder.
pub fn start(addr: SocketAddr, health: &'static Health) -> Result<ServerHandle, ServerError> {
    super::metrics::install();
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    let local = std_listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(ServerError::Runtime)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(ServerError::Runtime)?
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let served = axum::serve(listener, router(health))
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP listener stopped");
                }
            })
        })
        .map_err(ServerError::Runtime)?;
    tracing::info!(address = %local, "serving /healthz, /readyz and /metrics");
    Ok(ServerHandle {
        addr: local,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
