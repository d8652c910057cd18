//! Serving the sandbox: which stand-ins it serves, the HTTP/1 accept loop, and the one thing
//! axum cannot express — dropping a connection without an answer, which the reset and hang
//! faults need. The gate marks such responses with [`gate::DropConnection`]; the connection
//! service turns the mark into an error, on which hyper closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::settings::SandboxConfig;
use super::shared::{Shared, StandIn};
use super::{emnify, gate, inspect, telnyx, twilio};

#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for ConnectionDropped {}

/// The stand-ins this sandbox serves, each under `/<name>`.
fn stand_ins(config: &SandboxConfig) -> Vec<Arc<dyn StandIn>> {
    let sims = config.sims;
    vec![
        Arc::new(emnify::Emnify::new(sims)),
        Arc::new(twilio::Twilio::new(sims)),
        Arc::new(telnyx::Telnyx::new(sims, config.system_statuses)),
    ]
}

/// The whole sandbox as one router.
pub fn app(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for stand_in in shared.stand_ins() {
        router = router.nest(
            &format!("/{}", stand_in.name()),
            gate::wrap(stand_in.router(), stand_in.clone(), shared.clone()),
        );
    }
    router
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
    let shared = Arc::new(Shared::new(config.clone(), stand_ins(&config)));
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
                    if response
                        .extensions()
                        .get::<gate::DropConnection>()
                        .is_some()
                    {
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
