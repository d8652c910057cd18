//! A small HTTP proxy in front of the sandbox, in the test process, that does what gateways,
//! load balancers and debug pages do to answers the provider gave (DESIGN 5, "hostile peers"):
//! a 502 page after the upstream applied the change, a body cut short or of the wrong shape, a
//! redirect to another origin, an endless body, an error page that echoes the request's
//! headers, a 429 with a long `Retry-After`. A rule picks, per request, whether to forward it
//! untouched or which fault to play; every request is recorded so that a test can count them.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward it and pass the answer through.
    Forward,
    /// Forward it (the upstream applies the change), then answer this gateway status with an
    /// HTML page instead of the upstream's answer.
    AppliedThenGateway(u16),
    /// Forward it, then pass the upstream's status with the first half of its body.
    AppliedThenCutBody,
    /// Forward it, then pass the upstream's status with a JSON body of an unexpected shape.
    AppliedThenWrongShape,
    /// Do not forward; answer 307 to this absolute URL.
    Redirect(String),
    /// Do not forward; answer 200 with a body that never ends.
    EndlessBody,
    /// Do not forward; answer 400 with a debug page that echoes the request's headers, with
    /// terminal escape sequences around them.
    EchoHeaders,
    /// Do not forward; answer 429 with this `Retry-After` (seconds), or with none (neither
    /// Twilio nor emnify documents the header: provider-apis.md 1.7, 2.4).
    TooMany(Option<u64>),
    /// Do not forward; answer this 4xx with a provider-like error body.
    Refuse(u16),
    /// Do not forward and never answer: the request is out, its fate unknown to the client.
    Hang,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
}

pub type Rule = Arc<dyn Fn(&Method, &str) -> Fault + Send + Sync>;

pub struct Proxy {
    /// `http://ADDR`: point a provider's `base_url` at this plus `/emnify`, `/twilio`, `/telnyx`.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: Arc<tokio::sync::Notify>,
    served: tokio::task::JoinHandle<()>,
}

/// A rule that plays `fault` on every change request (see [`is_change`]) and forwards the rest.
pub fn on_changes(fault: impl Fn() -> Fault + Send + Sync + 'static) -> Rule {
    Arc::new(move |method, path| {
        if is_change(method, path) {
            fault()
        } else {
            Fault::Forward
        }
    })
}

/// A change request: anything but a read, an emnify authentication or the sandbox's own
/// inspection endpoints.
pub fn is_change(method: &Method, path: &str) -> bool {
    *method != Method::GET && !path.contains("/authenticate") && !path.starts_with("/_sandbox")
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`http://ADDR`).
    pub async fn start(upstream: String, rule: Rule) -> Proxy {
        Proxy::start_on("127.0.0.1:0", upstream, rule).await
    }

    /// [`Proxy::start`] on a given loopback address (a provider that comes back where it was).
    pub async fn start_on(addr: &str, upstream: String, rule: Rule) -> Proxy {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let state = (upstream, rule, seen.clone(), client);
        let app = axum::Router::new().fallback(move |req: Request| {
            let (upstream, rule, seen, client) = state.clone();
            async move { handle(&upstream, &rule, &seen, &client, req).await }
        });
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let signal = shutdown.clone();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.notified().await })
                .await
                .unwrap()
        });
        Proxy {
            base,
            seen,
            shutdown,
            served,
        }
    }

    /// Goes away: stops listening (connections are refused from now on) and closes the
    /// connections it has, once their requests are answered.
    pub async fn stop(self) {
        self.shutdown.notify_one();
        let _ = self.served.await;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests seen so far that `pick` selects.
    pub fn count(&self, pick: impl Fn(&Seen) -> bool) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| pick(s)).count()
    }
}

async fn forward(
    upstream: &str,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = client.request(method, format!("{upstream}{path}"));
    for (name, value) in headers {
        // The Host header goes along, so that the upstream's links point back at the proxy.
        if name != "content-length" && name != "connection" {
            request = request.header(name, value);
        }
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    (status, headers, body)
}

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_str(content_type).unwrap());
    response
}

async fn handle(
    upstream: &str,
    rule: &Rule,
    seen: &Mutex<Vec<Seen>>,
    client: &reqwest::Client,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap();
    let fault = rule(&method, &path);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    });
    match fault {
        Fault::Forward => {
            let (status, upstream_headers, body) =
                forward(upstream, client, method, &path, &headers, body).await;
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &upstream_headers {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Fault::AppliedThenGateway(code) => {
            forward(upstream, client, method, &path, &headers, body).await;
            respond(
                StatusCode::from_u16(code).unwrap(),
                "text/html",
                Body::from(format!(
                    "<html><head><title>{code} Bad Gateway</title></head><body><center><h1>{code} Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
                )),
            )
        }
        Fault::AppliedThenCutBody => {
            let (status, upstream_headers, body) =
                forward(upstream, client, method, &path, &headers, body).await;
            let content_type = upstream_headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let cut = body.slice(..body.len() / 2);
            respond(status, &content_type, Body::from(cut))
        }
        Fault::AppliedThenWrongShape => {
            let (status, _, _) = forward(upstream, client, method, &path, &headers, body).await;
            respond(
                status,
                "application/json",
                Body::from(r#"{"status":"ok","note":"answered by the gateway's cache"}"#),
            )
        }
        Fault::Redirect(location) => {
            let mut response = respond(
                StatusCode::TEMPORARY_REDIRECT,
                "text/plain",
                Body::from("moved"),
            );
            response
                .headers_mut()
                .insert("location", HeaderValue::from_str(&location).unwrap());
            response
        }
        Fault::EndlessBody => {
            let chunk = Bytes::from(vec![b'['; 64 * 1024]);
            let stream =
                futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            respond(
                StatusCode::OK,
                "application/json",
                Body::from_stream(stream),
            )
        }
        Fault::EchoHeaders => {
            let mut page = String::from("\u{1b}[31mDEBUG: request refused\u{1b}[0m\r\n");
            for (name, value) in &headers {
                page.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("?")));
            }
            page.push_str(&format!(
                "body: {}\u{7}\u{1b}]0;pwned\u{7}",
                String::from_utf8_lossy(&body)
            ));
            let body = serde_json::json!({
                "message": page,
                "code": 20001,
                "error_code": 1001,
                "errors": [{"code": "10015", "title": "Bad request", "detail": page}],
            });
            respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                Body::from(body.to_string()),
            )
        }
        Fault::Hang => std::future::pending().await,
        Fault::Refuse(code) => respond(
            StatusCode::from_u16(code).unwrap(),
            "application/json",
            Body::from(r#"{"code":20001,"message":"Invalid parameter","status":400}"#),
        ),
        Fault::TooMany(seconds) => {
            let mut response = respond(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                Body::from(r#"{"message":"Too many requests"}"#),
            );
            if let Some(seconds) = seconds {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// A web server at another origin that answers 200 to everything and records what reached it:
/// where a redirect would take a request, and where no credential may ever arrive.
pub struct Elsewhere {
    pub base: String,
    pub hits: Arc<Mutex<Vec<Seen>>>,
}

impl Elsewhere {
    pub async fn start() -> Elsewhere {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // `localhost`, not the IP: another origin than the proxy's even on the same machine.
        let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(Seen {
                    method: req.method().clone(),
                    path: req.uri().to_string(),
                    headers: req.headers().clone(),
                });
                respond(StatusCode::OK, "application/json", Body::from("{}"))
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Elsewhere { base, hits }
    }
}
