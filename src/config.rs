//! Provider configuration (SPEC 2.1): `simbatch.toml` names providers and their kinds, base
//! URLs and the environment variables that hold their credentials. Everything is checked here,
//! before any I/O with a provider: unknown keys, unknown kinds, malformed URLs, plain `http://`
//! to anything but loopback. Credentials are never read from the file or the command line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use crate::job::model::ProviderKind;
pub use crate::provider::facts::CredentialEnv;
use crate::provider::registry::provider_of;

/// The file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "simbatch.toml";

/// The highest request rate accepted anywhere (`--rate`, `rate =`): far above any provider's
/// documented limit (Telnyx's 100/s is the highest), within the limiter's arithmetic.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The most rows in flight per lane (`--concurrency`, `concurrency =`).
pub const MAX_CONCURRENCY: usize = 4096;
/// The largest in-flight cap (`max_in_flight =`; Twilio documents 100).
pub const MAX_IN_FLIGHT: usize = 10_000;

/// A request rate as given: positive, finite and at most [`MAX_RATE`].
pub fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE {
        Ok(rate)
    } else {
        Err(format!(
            "`{rate}` is not a usable rate: give requests per second, more than 0 and at most {MAX_RATE}"
        ))
    }
}

/// `--rate N` (for clap).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of requests per second"))?;
    check_rate(rate)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("provider `{name}`: {message}")]
    Provider { name: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    providers: BTreeMap<String, ProviderSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    kind: ProviderKind,
    base_url: Option<String>,
    /// emnify application token / Telnyx API key variable.
    token_env: Option<String>,
    /// Twilio: the Account SID (or API key SID) variable.
    account_sid_env: Option<String>,
    /// Twilio: the Auth Token (or API key secret) variable.
    auth_token_env: Option<String>,
    /// Requests per second (replaces the documented rate).
    rate: Option<f64>,
    /// Rows in flight at once.
    concurrency: Option<usize>,
    /// Requests in flight at once (Twilio's documented cap is 100).
    max_in_flight: Option<usize>,
}

/// Optional per-provider tuning from `simbatch.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tuning {
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub max_in_flight: Option<usize>,
}

/// One configured provider account.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Without the version prefix; the client adds `/api/v1`, `/v1` or `/v2`.
    pub base_url: Url,
    pub credentials: CredentialEnv,
    pub tuning: Tuning,
}

/// The configured providers by name. The three default names (`emnify`, `twilio`, `telnyx`)
/// always exist with the real providers' base URLs unless the file redefines them.
#[derive(Debug, Clone, PartialEq)]
pub struct Providers {
    by_name: BTreeMap<String, ProviderConfig>,
}

impl Default for Providers {
    fn default() -> Self {
        let by_name = ProviderKind::ALL
            .into_iter()
            .map(|kind| {
                let config = ProviderConfig {
                    name: kind.name().to_string(),
                    kind,
                    base_url: Url::parse(provider_of(kind).default_base_url())
                        .expect("default URLs parse"),
                    credentials: provider_of(kind).default_credentials(),
                    tuning: Tuning::default(),
                };
                (kind.name().to_string(), config)
            })
            .collect();
        Providers { by_name }
    }
}

impl Providers {
    /// Loads `path` if given, else `simbatch.toml` in the working directory if present, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Providers, ConfigError> {
        match path {
            Some(path) => Providers::from_file(path),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Providers::from_file(Path::new(DEFAULT_CONFIG_FILE))
            }
            None => Ok(Providers::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Providers, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Providers::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Providers, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: DEFAULT_CONFIG_FILE.to_string(),
            message: parse_message(text, &e),
        })?;
        let mut providers = Providers::default();
        for (name, section) in file.providers {
            let config = section.into_config(&name)?;
            providers.by_name.insert(name, config);
        }
        Ok(providers)
    }

    /// Provider names and kinds only (as recorded in a run's manifest), with default URLs and
    /// credentials: enough to read the run's job file again.
    pub fn from_kinds(kinds: &BTreeMap<String, ProviderKind>) -> Providers {
        let mut providers = Providers::default();
        for (name, kind) in kinds {
            providers.by_name.insert(
                name.clone(),
                ProviderConfig {
                    name: name.clone(),
                    kind: *kind,
                    base_url: Url::parse(provider_of(*kind).default_base_url())
                        .expect("default URLs parse"),
                    credentials: provider_of(*kind).default_credentials(),
                    tuning: Tuning::default(),
                },
            );
        }
        providers
    }

    /// Every configured name with its kind.
    pub fn kinds(&self) -> BTreeMap<String, ProviderKind> {
        self.by_name
            .iter()
            .map(|(n, c)| (n.clone(), c.kind))
            .collect()
    }

    /// Adds or replaces a provider (the demo and library users configure in code).
    pub fn insert(&mut self, config: ProviderConfig) {
        self.by_name.insert(config.name.clone(), config);
    }

    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Points every provider of a kind at `base` + `/<kind>` (the sandbox layout of SPEC 6).
    pub fn point_at_sandbox(&mut self, base: &Url) {
        for config in self.by_name.values_mut() {
            let url = format!(
                "{}/{}",
                base.as_str().trim_end_matches('/'),
                config.kind.name()
            );
            config.base_url = Url::parse(&url).expect("sandbox URL parses");
        }
    }
}

impl ProviderSection {
    fn into_config(self, name: &str) -> Result<ProviderConfig, ConfigError> {
        let err = |message: String| ConfigError::Provider {
            name: name.to_string(),
            message,
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(err(
                "a provider name may not be empty or contain spaces or commas".into(),
            ));
        }
        let raw_url = self
            .base_url
            .unwrap_or_else(|| provider_of(self.kind).default_base_url().to_string());
        let base_url = check_base_url(&raw_url).map_err(err)?;
        let defaults = provider_of(self.kind).default_credentials();
        let credentials = match defaults {
            CredentialEnv::Basic { username, password } => {
                if self.token_env.is_some() {
                    return Err(err(format!(
                        "{} uses `account_sid_env` and `auth_token_env`, not `token_env`",
                        self.kind
                    )));
                }
                CredentialEnv::Basic {
                    username: self.account_sid_env.unwrap_or(username),
                    password: self.auth_token_env.unwrap_or(password),
                }
            }
            CredentialEnv::Token(default) => {
                if self.account_sid_env.is_some() || self.auth_token_env.is_some() {
                    return Err(err(format!(
                        "{} uses `token_env`, not `account_sid_env`/`auth_token_env`",
                        self.kind
                    )));
                }
                CredentialEnv::Token(self.token_env.unwrap_or(default))
            }
        };
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(err(
                "`rate` must be a positive number of requests per second".into(),
            ));
        }
        if let Some(rate) = self.rate {
            check_rate(rate).map_err(|e| err(format!("`rate`: {e}")))?;
        }
        if self.concurrency == Some(0) || self.max_in_flight == Some(0) {
            return Err(err(
                "`concurrency` and `max_in_flight` must be at least 1".into()
            ));
        }
        if self.concurrency.is_some_and(|c| c > MAX_CONCURRENCY) {
            return Err(err(format!(
                "`concurrency` may be at most {MAX_CONCURRENCY} rows in flight"
            )));
        }
        if self.max_in_flight.is_some_and(|c| c > MAX_IN_FLIGHT) {
            return Err(err(format!(
                "`max_in_flight` may be at most {MAX_IN_FLIGHT} requests"
            )));
        }
        Ok(ProviderConfig {
            name: name.to_string(),
            kind: self.kind,
            base_url,
            credentials,
            tuning: Tuning {
                rate: self.rate,
                concurrency: self.concurrency,
                max_in_flight: self.max_in_flight,
            },
        })
    }
}

/// A TOML error as `line N: message`, with a hint when a credential was put in the file.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim().to_string();
    const SECRETS: [&str; 6] = [
        "token",
        "api_key",
        "auth_token",
        "password",
        "secret",
        "key",
    ];
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        if SECRETS.contains(&field) {
            message = format!(
                "`{field}`: credentials never go in the config file; name the environment variable that holds it instead (token_env, account_sid_env, auth_token_env)"
            );
        }
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// A base URL as it may be shown in a message: anything that could carry a credential (the
/// part before `@`, a query, a fragment) is replaced by `[redacted]`, whether or not it parses.
fn shown_url(raw: &str) -> String {
    let (head, cut) = match raw.find(['?', '#']) {
        Some(i) => (&raw[..i], true),
        None => (raw, false),
    };
    let head = match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &head[..s], &head[at + 1..]),
        (None, Some(at)) => format!("[redacted]@{}", &head[at + 1..]),
        _ => head.to_string(),
    };
    if cut {
        format!("{head}?[redacted]")
    } else {
        head
    }
}

/// Parses a base URL: `https://` anywhere, `http://` only to loopback (SPEC 2.1), no
/// credentials, query or fragment. Messages show the URL without those parts.
pub fn check_base_url(raw: &str) -> Result<Url, String> {
    let shown = shown_url(raw);
    let url = Url::parse(raw).map_err(|e| format!("base_url `{shown}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "base_url `{shown}` must not carry credentials (user:password@); they come only from the environment (token_env, account_sid_env, auth_token_env)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base_url `{shown}` must not have a query or fragment (they could carry a credential; credentials come only from the environment)"
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(format!(
                    "base_url `{shown}` uses plain http:// to a non-loopback host; credentials would travel unencrypted — use https://"
                ));
            }
        }
        other => {
            return Err(format!(
                "base_url `{shown}` has scheme `{other}`; use https://"
            ))
        }
    }
    if url.host().is_none() {
        return Err(format!("base_url `{shown}` has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_the_three_kinds() {
        let p = Providers::default();
        assert_eq!(
            p.names().collect::<Vec<_>>(),
            ["emnify", "telnyx", "twilio"]
        );
        assert_eq!(
            p.get("telnyx").unwrap().base_url.as_str(),
            "https://api.telnyx.com/"
        );
    }

    #[test]
    fn second_account_of_a_kind() {
        let p = Providers::from_toml(
            "[providers.emnify-eu]\nkind = \"emnify\"\ntoken_env = \"EMNIFY_EU_APPLICATION_TOKEN\"\n",
        )
        .unwrap();
        let eu = p.get("emnify-eu").unwrap();
        assert_eq!(eu.kind, ProviderKind::Emnify);
        assert_eq!(
            eu.credentials,
            CredentialEnv::Token("EMNIFY_EU_APPLICATION_TOKEN".into())
        );
        assert!(p.get("emnify").is_some());
    }

    #[test]
    fn refuses_bad_files() {
        for (text, needle) in [
            ("[providers.x]\nkind = \"vodafone\"\n", "unknown variant"),
            (
                "[providers.x]\nkind = \"emnify\"\nbase_ulr = \"https://a\"\n",
                "unknown field",
            ),
            (
                "[providers.x]\nkind = \"emnify\"\nbase_url = \"http://example.com\"\n",
                "non-loopback",
            ),
            (
                "[providers.x]\nkind = \"twilio\"\ntoken_env = \"T\"\n",
                "account_sid_env",
            ),
            ("[providers.x\n", "unclosed table"),
        ] {
            let err = Providers::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn numbers_are_bounded() {
        for (setting, needle) in [
            ("rate = 5e9", "`rate`"),
            ("concurrency = 100000", "`concurrency`"),
            ("max_in_flight = 100000000", "`max_in_flight`"),
        ] {
            let err =
                Providers::from_toml(&format!("[providers.x]\nkind = \"emnify\"\n{setting}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(needle), "{setting}: {err}");
        }
        assert!(parse_rate("1e308").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_rate("250"), Ok(250.0));
    }

    #[test]
    fn http_only_to_loopback() {
        assert!(check_base_url("http://127.0.0.1:8080/emnify").is_ok());
        assert!(check_base_url("http://localhost:1").is_ok());
        assert!(check_base_url("http://[::1]:1").is_ok());
        assert!(check_base_url("http://10.0.0.1").is_err());
        assert!(check_base_url("ftp://a").is_err());
        assert!(check_base_url("not a url").is_err());
        let e = check_base_url("https://user:hunter2@cdn.emnify.net/").unwrap_err();
        assert!(e.contains("must not carry credentials"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        for raw in [
            "https://cdn.emnify.net/?token=hunter2",
            "https://cdn.emnify.net/#hunter2",
            "https://u:hunter2 x@cdn emnify.net",
            "ftp://cdn.emnify.net/?k=hunter2",
        ] {
            let e = check_base_url(raw).unwrap_err();
            assert!(!e.contains("hunter2"), "{raw}: {e}");
            assert!(e.contains("[redacted]"), "{raw}: {e}");
        }
    }
}
