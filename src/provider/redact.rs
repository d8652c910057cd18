//! Text that came from a provider (or from something in front of it) made safe to store and
//! print: every credential this process uses is replaced by `[redacted]` — as configured, as
//! sent (Twilio's Basic pair in base64), as obtained (emnify's auth token) — and so is anything
//! that looks like one (an `Authorization` header line, a bearer or basic token, a JWT, a
//! `…token`/`…secret`/`password` field). Control characters are replaced by spaces, so that a
//! provider message can neither carry terminal escape sequences onto the operator's screen nor
//! break a report line, and overlong text is cut.
//!
//! Why a process-wide register: an error page that echoes the request's headers reaches
//! simbatch through every layer (error classification, confirmation reasons, stop messages,
//! logs); cleaning it where provider text first becomes a `ProviderError`, a confirmation
//! reason or a stored record needs the secrets there, without threading them through every
//! call. The register only grows during a process.

use std::sync::{OnceLock, RwLock};

use regex::Regex;

/// What replaces a credential.
pub const REDACTED: &str = "[redacted]";
/// Provider text longer than this is cut (an error page can be megabytes).
pub const MAX_TEXT_CHARS: usize = 600;
/// Shorter values are not registered: replacing every `x` in every message would make the
/// messages useless, and a value this short protects nothing.
const MIN_SECRET_LEN: usize = 6;

fn secrets() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            // A header line that carries a credential, to its end.
            (
                r"(?i)\b(proxy-)?authorization\s*:[^\r\n]*",
                "authorization: [redacted]",
            ),
            (
                r"(?i)\b(x-api-key|api-key|cookie|set-cookie)\s*:[^\r\n]*",
                "$1: [redacted]",
            ),
            (
                r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+",
                "$1 [redacted]",
            ),
            // A JSON Web Token (emnify's auth token is one).
            (
                r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*)?",
                "[redacted]",
            ),
            // `"application_token": "…"`, `auth_token=…`, `password: …`.
            (
                r#"(?i)([A-Za-z_]*(token|secret|password|api_?key)"?\s*[:=]\s*"?)[^"&,;\s}]+"#,
                "${1}[redacted]",
            ),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).expect("valid pattern"), replacement))
        .collect()
    })
}

/// Adds a credential to redact from now on (its surrounding whitespace too is ignored).
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut all = secrets().write().expect("secrets lock");
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
        // Longest first, so that a secret containing another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Whether [`clean`] would change `text` (or might: a trigger word of a pattern is there). Cheap,
/// so that the many short, ordinary texts of a large run skip the patterns.
fn needs_cleaning(text: &str) -> bool {
    const TRIGGERS: [&str; 8] = [
        "auth", "bearer", "basic", "eyj", "token", "secret", "password", "key",
    ];
    if text.len() > MAX_TEXT_CHARS || text.chars().any(char::is_control) || text.contains("  ") {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    TRIGGERS.iter().any(|t| lower.contains(t))
        || lower.contains("cookie")
        || secrets()
            .read()
            .expect("secrets lock")
            .iter()
            .any(|s| text.contains(s.as_str()))
}

/// `text` with every credential and credential-looking value redacted, control characters
/// replaced by spaces, runs of spaces collapsed and the length capped.
pub fn clean(text: &str) -> String {
    if !needs_cleaning(text) {
        return text.trim().to_string();
    }
    let mut out = text.to_string();
    for secret in secrets().read().expect("secrets lock").iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    for (pattern, replacement) in patterns() {
        if pattern.is_match(&out) {
            out = pattern.replace_all(&out, *replacement).into_owned();
        }
    }
    let mut cleaned = String::with_capacity(out.len());
    let mut space = false;
    for c in out.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if !space && !cleaned.is_empty() {
                cleaned.push(' ');
            }
            space = true;
        } else {
            cleaned.push(c);
            space = false;
        }
        if cleaned.chars().count() >= MAX_TEXT_CHARS {
            cleaned.push('…');
            break;
        }
    }
    cleaned.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_credential_shapes_are_redacted() {
        register("registered-secret-value");
        let page = "\u{1b}[31mDEBUG\u{1b}[0m\r\nauthorization: Basic QUM6c2VjcmV0\r\nx-api-key: abc\r\nbody: {\"application_token\":\"tok-123456\"} registered-secret-value\u{7}";
        let clean = clean(page);
        assert!(!clean.contains("QUM6c2VjcmV0"), "{clean}");
        assert!(!clean.contains("abc"), "{clean}");
        assert!(!clean.contains("tok-123456"), "{clean}");
        assert!(!clean.contains("registered-secret-value"), "{clean}");
        assert!(!clean.chars().any(char::is_control), "{clean:?}");
        assert!(clean.starts_with("[31mDEBUG"), "the message stays: {clean}");
    }

    #[test]
    fn tokens_and_jwts_anywhere_are_redacted() {
        let text = "refused Bearer abc.def-ghi for eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln and password=hunter22";
        let clean = clean(text);
        assert_eq!(
            clean,
            "refused Bearer [redacted] for [redacted] and password=[redacted]"
        );
    }

    #[test]
    fn ordinary_messages_pass_and_long_ones_are_cut() {
        assert_eq!(clean("SIM 8988303 not found"), "SIM 8988303 not found");
        let long = "x".repeat(5000);
        assert!(clean(&long).chars().count() <= MAX_TEXT_CHARS + 1);
        register("ab"); // too short to mean anything: not registered
        assert_eq!(clean("tab"), "tab");
    }
}
