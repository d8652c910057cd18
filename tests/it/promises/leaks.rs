//! Credentials go only to the configured provider and never into anything simbatch stores or
//! prints: no redirect is followed with them, a secret in a `base_url` is never echoed, a
//! credential that cannot be sent is refused before anything is, and a provider's error page
//! that echoes the request's headers is redacted (and its terminal escapes removed) before it
//! reaches the reports, the state store or the console.

use std::sync::Arc;

use base64::Engine as _;
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};

use crate::proxy::{is_change, on_changes, Elsewhere, Fault};
use crate::run_support::{show, RunEnv};
use crate::support::{contains, files_under};

/// Two suspensions at each provider.
fn job() -> String {
    let mut job = String::from("action,provider,iccid\n");
    for i in [1, 2] {
        for (provider, prefix) in [
            ("emnify", EMNIFY_PREFIX),
            ("twilio", TWILIO_PREFIX),
            ("telnyx", TELNYX_PREFIX),
        ] {
            job.push_str(&format!(
                "suspend,{provider},{}\n",
                inventory::iccid(prefix, i)
            ));
        }
    }
    job
}

/// Case 10: a 307 to another origin — on emnify's `POST /authenticate`, whose body carries the
/// application token, and on every other provider's change requests — is reported with its
/// `Location`, and nothing reaches the other origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_10_no_request_with_credentials_follows_a_redirect() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let elsewhere = Elsewhere::start().await;
    let target = format!("{}/collect", elsewhere.base);
    let location = target.clone();
    let _proxy = super::behind_proxy(
        &env,
        Arc::new(move |method, path| {
            if path.contains("/authenticate") || is_change(method, path) {
                Fault::Redirect(location.clone())
            } else {
                Fault::Forward
            }
        }),
    )
    .await;
    // Twilio and Telnyx: each change is refused with the redirect named.
    let others: String = job()
        .lines()
        .filter(|l| !l.contains("emnify"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = env.write_job("others.csv", &format!("{others}\n"));
    let output = env.run(&["run", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["outcome"], "failed", "{r:?}");
        assert!(r["reason"].contains(&target), "{r:?}");
    }
    // emnify: its authentication is redirected, so no request of the account can go on.
    let emnify: String = job()
        .lines()
        .filter(|l| !l.contains("twilio") && !l.contains("telnyx"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = env.write_job("emnify.csv", &format!("{emnify}\n"));
    let output = env
        .run(&["run", "--reports", "emnify-reports", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&target),
        "the redirect is named with its Location: {}",
        show(&output)
    );
    let hits = elsewhere.hits.lock().unwrap().clone();
    assert!(
        hits.is_empty(),
        "requests followed the redirect to another origin: {hits:?}"
    );
    assert!(env.sb.journal().await.is_empty());
}

/// Case 13: a provider error page that echoes the request's headers (a gateway's debug page)
/// and carries terminal escape sequences: the reports, the state store and the console hold
/// neither any credential (raw, as sent in `Authorization`, or emnify's auth token) nor a
/// control character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_13_provider_messages_are_redacted_and_stripped_of_control_characters() {
    const SECRET: &str = "Sup3r-S3cret-Value-For-Redaction";
    let env = RunEnv::new(super::sandbox(100)).await;
    let proxy = super::behind_proxy(&env, on_changes(|| Fault::EchoHeaders)).await;
    let path = env.write_job("job.csv", &job());
    let output = env
        .run_with_token(&["run", "-v", path.to_str().unwrap()], SECRET)
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));

    // Every credential as it went over the wire: the Authorization values the proxy saw
    // (emnify's auth token, Twilio's Basic pair, Telnyx's key) and the raw secret.
    let mut secrets: Vec<Vec<u8>> = vec![SECRET.as_bytes().to_vec()];
    for seen in proxy.seen() {
        if let Some(auth) = seen.headers.get("authorization") {
            let value = auth.to_str().unwrap();
            secrets.push(value.as_bytes().to_vec());
            if let Some((_, credential)) = value.split_once(' ') {
                secrets.push(credential.as_bytes().to_vec());
            }
        }
    }
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{SECRET}", crate::sandbox_support::TWILIO_USER));
    secrets.push(basic.into_bytes());
    assert!(secrets.len() > 3, "the proxy saw the credentials");

    let results = env.results();
    assert_eq!(results.len(), 6);
    for r in &results {
        assert_eq!(r["outcome"], "failed", "{r:?}");
        assert!(r["reason"].contains("DEBUG"), "the message is kept: {r:?}");
    }
    let mut artefacts = vec![
        ("stdout".to_string(), output.stdout.clone()),
        ("stderr".to_string(), output.stderr.clone()),
    ];
    let mut files = Vec::new();
    files_under(&env.dir.path().join("reports"), &mut files);
    files_under(&env.dir.path().join(".simbatch"), &mut files);
    assert!(files.len() > 4);
    for file in files {
        artefacts.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    for (name, bytes) in &artefacts {
        for secret in &secrets {
            assert!(
                !contains(bytes, secret),
                "{name} holds a credential ({})",
                String::from_utf8_lossy(secret)
            );
        }
        if !name.contains(".simbatch") {
            assert!(
                !bytes.iter().any(|b| matches!(b, 0x1b | 0x07)),
                "{name} holds a terminal escape"
            );
        }
    }
    for r in &results {
        assert!(
            !r["reason"].chars().any(|c| c.is_control()),
            "control characters in {r:?}"
        );
    }
}

/// Case 12: a secret in a `base_url` (user:password@, a query, a fragment, or a value that does
/// not even parse) is never echoed in an error; a credential that cannot travel in an HTTP
/// header (it holds a newline) is refused before anything is sent, naming its variable and not
/// its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_12_secrets_in_urls_are_never_echoed_and_bad_credentials_refused_up_front() {
    const SECRET: &str = "Zq9SecretInUrl7";
    let env = RunEnv::new(super::sandbox(100)).await;
    let path = env.write_job("job.csv", &job());
    for url in [
        format!("https://user:{SECRET}@api.telnyx.com"),
        format!("https://api.telnyx.com/?api_key={SECRET}"),
        format!("https://api.telnyx.com/#{SECRET}"),
        format!("https://user:{SECRET} x@api telnyx.com"),
        format!("ftp://api.telnyx.com/?token={SECRET}"),
        format!("http://10.0.0.1/?token={SECRET}"),
    ] {
        let config = env.write_job(
            "secret.toml",
            &format!("[providers.telnyx]\nkind = \"telnyx\"\nbase_url = \"{url}\"\n"),
        );
        for command in ["validate", "run"] {
            let output = env
                .run(&[
                    command,
                    "--config",
                    config.to_str().unwrap(),
                    path.to_str().unwrap(),
                ])
                .await;
            let text = show(&output);
            assert_eq!(output.status.code(), Some(2), "{url} ({command}): {text}");
            assert!(text.contains("base_url"), "{url} ({command}): {text}");
            assert!(
                !text.contains(SECRET),
                "{url} ({command}) echoed the secret: {text}"
            );
        }
    }

    let output = env
        .run_with_token(&["run", path.to_str().unwrap()], "first-line\nsecond-line")
        .await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("EMNIFY_APPLICATION_TOKEN")
            || text.contains("TELNYX_API_KEY")
            || text.contains("TWILIO_AUTH_TOKEN"),
        "{text}"
    );
    assert!(
        !text.contains("second-line"),
        "the value was echoed: {text}"
    );
    assert_eq!(
        env.sb.stats().await["requests_total"],
        0,
        "nothing was sent"
    );
}
