//! The provider accounts a run acts on, as its manifest records them, and how the accounts of
//! a later invocation differ (SPEC 3.3: a resume on another account is refused unless allowed).

use super::request::{Credentials, RunRequest};
use crate::provider::CredentialEnv;
use crate::store::AccountRecord;

/// The accounts (kind, base URL, credential variables) behind the provider names a job uses.
pub fn accounts<'a>(req: &RunRequest, names: impl Iterator<Item = &'a str>) -> Vec<AccountRecord> {
    let mut names: Vec<&str> = names.collect();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| req.parse.providers.get(name))
        .map(|c| AccountRecord {
            name: c.name.clone(),
            kind: c.kind,
            base_url: c.base_url.to_string(),
            credentials: match (&req.credentials, &c.credentials) {
                (Credentials::Given(_), _) => "given in code".to_string(),
                (_, CredentialEnv::Token(var)) => var.clone(),
                (_, CredentialEnv::Basic { username, password }) => {
                    format!("{username}+{password}")
                }
            },
        })
        .collect()
}

/// How `now` differs from the accounts a run recorded, in words; `None` when every provider
/// name is on the account it was (names the run did not record are not compared; an older
/// record without credential variables compares on kind and URL).
pub fn account_change(recorded: &[AccountRecord], now: &[AccountRecord]) -> Option<String> {
    let describe = |a: &AccountRecord| {
        format!(
            "{} at {} (credentials {})",
            a.kind, a.base_url, a.credentials
        )
    };
    let changes: Vec<String> = now
        .iter()
        .filter_map(|a| {
            let before = recorded.iter().find(|r| r.name == a.name)?;
            let same = before.kind == a.kind
                && before.base_url == a.base_url
                && (before.credentials.is_empty() || before.credentials == a.credentials);
            (!same).then(|| {
                format!(
                    "provider `{}` was {}, is now {}",
                    a.name,
                    describe(before),
                    describe(a)
                )
            })
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join("; "))
}
