//! Helpers for the sandbox tests: an in-process sandbox on a free loopback port, a real reqwest
//! client per provider's auth style, and validation of response bodies against the providers'
//! own OpenAPI documents (vendored in tests/fixtures/specs).

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use simbatch::sandbox::{RunningSandbox, SandboxConfig};

pub const TWILIO_USER: &str = "AC00000000000000000000000000000001";

pub struct Sb {
    pub sandbox: RunningSandbox,
    pub http: reqwest::Client,
    pub base: String,
    emnify_token: tokio::sync::OnceCell<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Sb {
    pub async fn start(config: SandboxConfig) -> Sb {
        let sandbox = simbatch::sandbox::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let base = sandbox.base_url();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        Sb {
            sandbox,
            http,
            base,
            emnify_token: tokio::sync::OnceCell::new(),
        }
    }

    /// Limits off, no faults, a short async delay: the plain functional sandbox.
    pub async fn plain(sims: u32) -> Sb {
        Sb::with_delay(sims, Duration::from_millis(100)).await
    }

    /// For tests that observe in-between states: the delay must outlast a loaded machine's
    /// scheduling hiccups between two requests.
    pub async fn with_delay(sims: u32, async_delay: Duration) -> Sb {
        Sb::start(SandboxConfig {
            sims,
            limits: simbatch::sandbox::LimitMode::Off,
            async_delay,
            ..SandboxConfig::default()
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn emnify_token(&self) -> String {
        self.emnify_token
            .get_or_init(|| async {
                let r = self
                    .http
                    .post(self.url("/emnify/api/v1/authenticate"))
                    .json(&json!({"application_token": "sandbox-app-token"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                Sb::reply(r).await.body["auth_token"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .await
            .clone()
    }

    pub async fn em(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.emnify_token().await;
        let mut req = self
            .http
            .request(method, self.url(&format!("/emnify{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        Sb::reply(req.send().await.unwrap()).await
    }

    pub async fn tw(&self, method: Method, path_or_url: &str, form: &[(&str, &str)]) -> Reply {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.url(&format!("/twilio{path_or_url}"))
        };
        let mut req = self
            .http
            .request(method.clone(), url)
            .basic_auth(TWILIO_USER, Some("auth-token"));
        if method == Method::POST {
            req = req.form(form);
        }
        Sb::reply(req.send().await.unwrap()).await
    }

    pub async fn tx(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, self.url(&format!("/telnyx{path}")))
            .bearer_auth("telnyx-key");
        if let Some(body) = body {
            req = req.json(&body);
        }
        Sb::reply(req.send().await.unwrap()).await
    }

    pub async fn journal(&self) -> Vec<Value> {
        let text = self
            .http
            .get(self.url("/_sandbox/journal"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.url("/_sandbox/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every operation of emnify eUICC `k`, oldest first (all pages).
    pub async fn euicc_operations(&self, k: u64) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let path = format!("/api/v1/euicc/{k}/operation?sort=creation_date&page={page}");
            let ops = self.em(Method::GET, &path, None).await.body;
            let ops = ops.as_array().expect("an operation list").clone();
            let short = ops.len() < 100;
            all.extend(ops);
            if short {
                break;
            }
        }
        all
    }

    /// How many Telnyx SIM card actions ended in `status` (every page of the unfiltered list:
    /// its status filter does not know `interrupted`).
    pub async fn telnyx_actions_ended(&self, status: &str) -> usize {
        let mut n = 0;
        for page in 1.. {
            let path = format!("/v2/sim_card_actions?page[number]={page}&page[size]=250");
            let body = self.tx(Method::GET, &path, None).await.body;
            let actions = body["data"].as_array().expect("an action list").clone();
            n += actions
                .iter()
                .filter(|a| a["status"]["value"] == status)
                .count();
            if actions.len() < 250 {
                return n;
            }
        }
        n
    }

    /// Requests the sandbox answered on `route` (`"GET /emnify/api/v1/endpoint"`), any status.
    pub async fn requests_to(&self, route: &str) -> u64 {
        self.stats().await["requests"]
            .as_array()
            .expect("a request list")
            .iter()
            .filter(|r| r["path"] == route)
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum()
    }

    /// How many profile downloads emnify eUICC `k` was sent.
    pub async fn downloads(&self, k: u64) -> usize {
        let ops = self.euicc_operations(k).await;
        ops.iter().filter(|o| o["action"]["id"] == 2).count()
    }

    /// Waits until asynchronous changes have settled.
    pub async fn settle(&self) {
        tokio::time::sleep(self.sandbox.shared.config.async_delay + Duration::from_millis(30))
            .await;
    }
}

// ------------------------------------------------------------------ OpenAPI validation

pub enum Provider {
    Emnify,
    /// emnify's bulk endpoints document (emnify-bulk-endpoint.json).
    EmnifyBulk,
    Twilio,
    Telnyx,
}

/// The limiter whose name starts with `prefix`, from `/_sandbox/stats`.
pub fn limiter<'a>(stats: &'a Value, prefix: &str) -> &'a Value {
    stats["limiters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"].as_str().unwrap().starts_with(prefix))
        .unwrap()
}

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/specs")
        .join(name);
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    openapi30_nullable(&mut spec);
    spec
}

/// OpenAPI 3.0's `nullable: true` is not JSON Schema: turn it into `type: [T, "null"]`.
fn openapi30_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), json!([t, "null"]));
                    }
                    _ if map.contains_key("$ref") => {
                        let r = map.remove("$ref").unwrap();
                        map.insert("anyOf".into(), json!([{"$ref": r}, {"type": "null"}]));
                    }
                    _ => {}
                }
                if let Some(Value::Array(e)) = map.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            map.values_mut().for_each(openapi30_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(openapi30_nullable),
        _ => {}
    }
}

fn spec(provider: &Provider) -> &'static Value {
    static EMNIFY: OnceLock<Value> = OnceLock::new();
    static EMNIFY_BULK: OnceLock<Value> = OnceLock::new();
    static TWILIO: OnceLock<Value> = OnceLock::new();
    static TELNYX: OnceLock<Value> = OnceLock::new();
    match provider {
        Provider::Emnify => EMNIFY.get_or_init(|| load("emnify-sim-endpoint-euicc.json")),
        Provider::EmnifyBulk => EMNIFY_BULK.get_or_init(|| load("emnify-bulk-endpoint.json")),
        Provider::Twilio => TWILIO.get_or_init(|| load("twilio-supersim-v1.json")),
        Provider::Telnyx => TELNYX.get_or_init(|| load("telnyx-wireless.json")),
    }
}

fn resolve<'a>(root: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolvable {r}"));
    }
    v
}

/// The JSON schema of a documented response, with the spec's components alongside so that
/// `#/components/...` references resolve.
fn response_schema(provider: &Provider, path: &str, method: &str, status: &str) -> Value {
    let root = spec(provider);
    let op = &root["paths"][path][method];
    assert!(!op.is_null(), "no {method} {path} in the spec");
    let responses = &op["responses"];
    let response = resolve(
        root,
        responses
            .get(status)
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {path} documents no {status} response")),
    );
    let schema = response["content"]["application/json"]["schema"].clone();
    assert!(
        !schema.is_null(),
        "{method} {path} {status} has no JSON schema"
    );
    json!({"allOf": [schema], "components": root["components"]})
}

/// The schema of one named component.
fn component_schema(provider: &Provider, name: &str) -> Value {
    let root = spec(provider);
    json!({"$ref": format!("#/components/schemas/{name}"), "components": root["components"]})
}

fn check(schema: &Value, body: &Value, what: &str) {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema for {what} does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its OpenAPI schema:\n{}\nbody: {body}",
        errors.join("\n")
    );
}

/// Asserts that `body` matches the documented response of `method path` with `status`.
pub fn assert_response(provider: Provider, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(&provider, path, method, &status.to_string());
    check(&schema, body, &format!("{method} {path} {status}"));
}

/// Asserts that `body` matches a named component schema.
pub fn assert_component(provider: Provider, name: &str, body: &Value) {
    check(&component_schema(&provider, name), body, name);
}
