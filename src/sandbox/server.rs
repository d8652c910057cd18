//! Serving the sandbox: the shared state behind all three providers, the HTTP/1 accept loop,
//! and the one thing axum cannot express — dropping a connection without an answer, which the
//! reset and hang faults need. Handlers mark such responses with [`DropConnection`]; the
//! connection service turns the mark into an error, on which hyper closes the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::journal::{Journal, Stats};
use super::limits::Limits;
use super::settings::SandboxConfig;
use super::{emnify, gate, inspect, telnyx, twilio};
use crate::job::ProviderKind;

/// Marks a response whose connection must be dropped instead of answered.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Everything the handlers share.
pub struct Shared {
    pub config: SandboxConfig,
    pub journal: Journal,
    pub stats: Stats,
    pub limits: RwLock<Option<Arc<Limits>>>,
    pub emnify_auth: emnify::Auth,
    pub emnify: Mutex<emnify::Inventory>,
    pub twilio: Mutex<twilio::Inventory>,
    pub telnyx: Mutex<telnyx::Inventory>,
    rng: Mutex<fastrand::Rng>,
}

impl Shared {
    pub fn new(config: SandboxConfig) -> Self {
        Shared {
            limits: RwLock::new(config.limits.factor().map(|k| Arc::new(Limits::new(k)))),
            emnify_auth: emnify::Auth::default(),
            emnify: Mutex::new(emnify::Inventory::new(config.sims)),
            twilio: Mutex::new(twilio::Inventory::new(config.sims)),
            telnyx: Mutex::new(telnyx::Inventory::new(config.sims)),
            journal: Journal::default(),
            stats: Stats::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
        }
    }

    /// True with probability `p` (seeded dice, so a faulty run can be repeated).
    pub fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().expect("rng lock").f64() < p
    }

    /// A uniformly random number in `0..=max`.
    pub fn uniform(&self, max: u64) -> u64 {
        self.rng.lock().expect("rng lock").u64(0..=max)
    }

    pub fn limits(&self) -> Option<Arc<Limits>> {
        self.limits.read().expect("limits lock").clone()
    }

    /// Applies every asynchronous change that is due by now, at all three providers.
    pub fn settle_all(&self) {
        let now = std::time::Instant::now();
        drop(self.emnify_inventory(now));
        drop(self.twilio_inventory(now));
        drop(self.telnyx_inventory(now));
    }

    /// Back to the initial inventory, with an empty journal, stats and limiter windows.
    pub fn reset(&self) {
        *self.emnify.lock().expect("emnify lock") = emnify::Inventory::new(self.config.sims);
        *self.twilio.lock().expect("twilio lock") = twilio::Inventory::new(self.config.sims);
        *self.telnyx.lock().expect("telnyx lock") = telnyx::Inventory::new(self.config.sims);
        *self.limits.write().expect("limits lock") = self
            .config
            .limits
            .factor()
            .map(|k| Arc::new(Limits::new(k)));
        self.emnify_auth.clear();
        self.journal.clear();
        self.stats.clear();
    }
}

/// `http://<Host header>`: lists and `next_page_url`s point back at whichever address the
/// client used to reach the sandbox.
pub fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The whole sandbox as one router.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest(
            "/emnify",
            gate::wrap(emnify::router(), ProviderKind::Emnify, shared.clone()),
        )
        .nest(
            "/twilio",
            gate::wrap(twilio::router(), ProviderKind::Twilio, shared.clone()),
        )
        .nest(
            "/telnyx",
            gate::wrap(telnyx::router(), ProviderKind::Telnyx, shared.clone()),
        )
        .nest("/_sandbox", inspect::router())
        .with_state(shared)
}

/// A running sandbox: its address, its state (for in-process inspection) and a way to stop it.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// `http://ADDR`; the providers' base URLs are this plus `/emnify`, `/twilio`, `/telnyx`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and ends the ones in progress.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves the sandbox on `listener` until the returned handle is shut down or dropped.
pub fn start(listener: TcpListener, config: SandboxConfig) -> std::io::Result<RunningSandbox> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, app(shared.clone()), stopped));
    Ok(RunningSandbox {
        addr,
        shared,
        stop,
        task,
    })
}

/// Binds `addr` (port 0 picks a free port) and starts the sandbox there.
pub async fn bind(addr: SocketAddr, config: SandboxConfig) -> std::io::Result<RunningSandbox> {
    start(TcpListener::bind(addr).await?, config)
}

async fn accept_loop(listener: TcpListener, app: Router, mut stopped: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let response = app
                        .oneshot(req.map(Body::new))
                        .await
                        .expect("axum routers are infallible");
                    if response.extensions().get::<DropConnection>().is_some() {
                        return Err(ConnectionDropped);
                    }
                    Ok(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stopped.changed() => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}
