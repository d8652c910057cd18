//! Turns one raw row into a typed [`JobRow`], or into every problem the row has (not just the
//! first): unknown or unsupported action, unknown provider, identifiers, missing and
//! inapplicable parameters, malformed booleans, numbers and times.

use chrono::{DateTime, Utc};

use super::columns::{suggest, Column};
use super::diagnostic::Diagnostic;
use super::ids::{Checked, Eid, Iccid, IdError, IdStrictness};
use super::model::{
    Action, ActivationCode, JobRow, Operation, ProviderKind, Target, TargetKind,
    DEFAULT_VALIDITY_PERIOD,
};
use super::source::RawRow;
use crate::config::Providers;
use crate::provider::registry::provider_of;

/// What the parser needs to know beyond the row itself.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub strictness: IdStrictness,
    /// `--provider NAME`: used where the row has no provider.
    pub default_provider: Option<String>,
    pub providers: Providers,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            strictness: IdStrictness::Strict,
            default_provider: None,
            providers: Providers::default(),
        }
    }
}

/// A parsed row with the warnings it raised (lenient check digits).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub row: JobRow,
    pub warnings: Vec<Diagnostic>,
}

/// Collects the problems of one row.
struct RowCheck<'a> {
    raw: &'a RawRow,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    strictness: IdStrictness,
}

impl<'a> RowCheck<'a> {
    fn error(&mut self, message: String) {
        self.errors.push(Diagnostic::error(self.raw.line, message));
    }

    fn get(&self, col: Column) -> Option<&'a str> {
        self.raw.get(col)
    }

    fn id<T>(
        &mut self,
        col: Column,
        parse: fn(&str, IdStrictness) -> Result<Checked<T>, IdError>,
    ) -> Option<T> {
        let value = self.get(col)?;
        match parse(value, self.strictness) {
            Ok(checked) => {
                if let Some(w) = checked.warning {
                    self.warnings.push(Diagnostic::warning(
                        self.raw.line,
                        format!("{}: {w}", col.name()),
                    ));
                }
                Some(checked.value)
            }
            Err(e) => {
                self.error(format!("{}: {e}", col.name()));
                None
            }
        }
    }

    fn bool(&mut self, col: Column) -> Option<bool> {
        let value = self.get(col)?;
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => {
                self.error(format!(
                    "{}: `{value}` is not a boolean (use true/false, 1/0 or yes/no)",
                    col.name()
                ));
                None
            }
        }
    }

    fn required(&mut self, col: Column, action: Action) -> Option<&'a str> {
        let value = self.get(col);
        if value.is_none() {
            self.error(format!("`{action}` needs a `{}` value", col.name()));
        }
        value
    }
}

/// The parameter columns and the actions each applies to.
fn applies(col: Column, action: Action, kind: ProviderKind) -> bool {
    let facts = provider_of(kind);
    use Action::*;
    match col {
        Column::ProfileIccid => matches!(action, ProfileEnable | ProfileFallback | ProfileDelete),
        Column::ActivationCode => action == ProfileDownload,
        Column::Enable => matches!(action, ProfileDownload | ProfileEnable),
        Column::Rollback => matches!(action, ProfileDownload | ProfileEnable),
        Column::ValidityPeriod => action.target_kind() == TargetKind::Euicc,
        Column::Target => matches!(action, Move | Attach),
        Column::RegistrationCode => action == Register,
        Column::ReportLost => action == Delete && facts.delete_reports_lost(),
        _ => true,
    }
}

const PARAMETER_COLUMNS: [Column; 8] = [
    Column::ProfileIccid,
    Column::ActivationCode,
    Column::Enable,
    Column::Rollback,
    Column::ValidityPeriod,
    Column::Target,
    Column::RegistrationCode,
    Column::ReportLost,
];

/// Checks one raw row. On failure every problem found is returned.
pub fn parse_row(raw: &RawRow, options: &ParseOptions) -> Result<Parsed, Vec<Diagnostic>> {
    let mut check = RowCheck {
        raw,
        errors: Vec::new(),
        warnings: Vec::new(),
        strictness: options.strictness,
    };
    let action = parse_action(&mut check);
    let provider = parse_provider(&mut check, options);
    if let (Some(action), Some((name, kind))) = (action, &provider) {
        check_support(&mut check, action, name, *kind);
    }
    let iccid = check.id(Column::Iccid, Iccid::parse);
    let eid = check.id(Column::Eid, Eid::parse);
    let not_before = parse_not_before(&mut check);
    let (Some(action), Some((provider, kind))) = (action, provider) else {
        return Err(check.errors);
    };
    check_parameters(&mut check, action, kind);
    let target = parse_target(&mut check, action, iccid, eid);
    let validity_period = parse_validity_period(&mut check);
    let enable = check.bool(Column::Enable);
    let rollback = check.bool(Column::Rollback).unwrap_or(false);
    let report_lost = check.bool(Column::ReportLost).unwrap_or(false);
    let operation = build_operation(
        &mut check,
        action,
        kind,
        enable,
        rollback,
        report_lost,
        validity_period,
    );
    match (check.errors.is_empty(), target, operation) {
        (true, Some(target), Some(operation)) => {
            let id = raw
                .get(Column::Id)
                .map(str::to_string)
                .unwrap_or_else(|| raw.line.to_string());
            Ok(Parsed {
                row: JobRow {
                    line: raw.line,
                    id,
                    provider,
                    kind,
                    target,
                    operation,
                    group: raw.get(Column::Group).map(str::to_string),
                    not_before,
                    extra: raw.extra.clone(),
                },
                warnings: check.warnings,
            })
        }
        _ => Err(check.errors),
    }
}

fn parse_action(check: &mut RowCheck<'_>) -> Option<Action> {
    let Some(value) = check.get(Column::Action) else {
        check.error("`action` is empty".to_string());
        return None;
    };
    match value.parse::<Action>() {
        Ok(action) => Some(action),
        Err(()) => {
            let hint = suggest(value, Action::ALL.map(Action::name))
                .map(|s| format!(" — did you mean `{s}`?"))
                .unwrap_or_default();
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            check.error(format!(
                "unknown action `{value}`{hint} (known actions: {})",
                all.join(", ")
            ));
            None
        }
    }
}

/// The row's provider name (or `--provider`) and its kind, if configured.
fn parse_provider(
    check: &mut RowCheck<'_>,
    options: &ParseOptions,
) -> Option<(String, ProviderKind)> {
    let name = check
        .get(Column::Provider)
        .map(str::to_string)
        .or_else(|| options.default_provider.clone());
    let Some(name) = name else {
        check.error("`provider` is empty and no --provider was given".to_string());
        return None;
    };
    match options.providers.get(&name) {
        Some(config) => Some((name, config.kind)),
        None => {
            let names: Vec<&str> = options.providers.names().collect();
            let hint = suggest(&name, names.iter().copied())
                .map(|s| format!(" — did you mean `{s}`?"))
                .unwrap_or_default();
            check.error(format!(
                "unknown provider `{name}`{hint} (configured: {}; add others in simbatch.toml)",
                names.join(", ")
            ));
            None
        }
    }
}

/// SPEC 1.2's support table, as the provider's facts hold it.
fn check_support(check: &mut RowCheck<'_>, action: Action, name: &str, kind: ProviderKind) {
    let facts = provider_of(kind);
    if !facts.supports(action) {
        let supported: Vec<&str> = Action::ALL
            .into_iter()
            .filter(|a| facts.supports(*a))
            .map(Action::name)
            .collect();
        check.error(format!(
            "provider `{name}` ({kind}) does not support `{action}`; it supports: {}",
            supported.join(", ")
        ));
    }
}

fn parse_not_before(check: &mut RowCheck<'_>) -> Option<DateTime<Utc>> {
    let value = check.get(Column::NotBefore)?;
    match DateTime::parse_from_rfc3339(value) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            check.error(format!(
                "not_before: `{value}` is not an RFC 3339 time ({e}); e.g. 2026-11-22T03:00:00Z"
            ));
            None
        }
    }
}

/// A parameter given for an action that does not use it is an error (a `rollback` that would
/// be ignored can leave devices offline).
fn check_parameters(check: &mut RowCheck<'_>, action: Action, kind: ProviderKind) {
    for col in PARAMETER_COLUMNS {
        if check.get(col).is_some() && !applies(col, action, kind) {
            let users: Vec<&str> = Action::ALL
                .into_iter()
                .filter(|a| ProviderKind::ALL.into_iter().any(|k| applies(col, *a, k)))
                .map(Action::name)
                .collect();
            check.error(format!(
                "`{}` does not apply to `{action}`{} (it is used by {})",
                col.name(),
                if col == Column::ReportLost {
                    format!(" on {kind}")
                } else {
                    String::new()
                },
                users.join(", ")
            ));
        }
    }
}

/// The row's target: a SIM by ICCID or an eUICC by EID, as its action needs.
fn parse_target(
    check: &mut RowCheck<'_>,
    action: Action,
    iccid: Option<Iccid>,
    eid: Option<Eid>,
) -> Option<Target> {
    match action.target_kind() {
        TargetKind::Sim => match iccid {
            Some(iccid) => Some(Target::Sim { iccid, eid }),
            None => {
                if check.get(Column::Iccid).is_none() {
                    check.error(format!("`{action}` needs an `iccid` value"));
                }
                None
            }
        },
        TargetKind::Euicc => match eid {
            Some(eid) => Some(Target::Euicc { eid, iccid }),
            None => {
                if check.get(Column::Eid).is_none() {
                    check.error(format!(
                        "`{action}` works on an eUICC and needs an `eid` value"
                    ));
                }
                None
            }
        },
    }
}

fn parse_validity_period(check: &mut RowCheck<'_>) -> Option<u32> {
    let Some(value) = check.get(Column::ValidityPeriod) else {
        return Some(DEFAULT_VALIDITY_PERIOD);
    };
    match value.parse::<u32>() {
        Ok(v) if (1..=86_400).contains(&v) => Some(v),
        _ => {
            check.error(format!(
                "validity_period: `{value}` must be a whole number of seconds from 1 to 86400"
            ));
            None
        }
    }
}

fn build_operation(
    check: &mut RowCheck<'_>,
    action: Action,
    kind: ProviderKind,
    enable: Option<bool>,
    rollback: bool,
    report_lost: bool,
    validity_period: Option<u32>,
) -> Option<Operation> {
    let profile = |check: &mut RowCheck<'_>| -> Option<Iccid> {
        check.required(Column::ProfileIccid, action)?;
        check.id(Column::ProfileIccid, Iccid::parse)
    };
    Some(match action {
        Action::Activate => Operation::Activate,
        Action::Suspend => Operation::Suspend,
        Action::Standby => Operation::Standby,
        Action::Delete => Operation::Delete { report_lost },
        Action::EnableDevice => Operation::EnableDevice,
        Action::DisableDevice => Operation::DisableDevice,
        Action::Move => {
            let target = check.required(Column::Target, action)?;
            check_move_target(check, kind, target)?;
            Operation::Move {
                target: target.to_string(),
            }
        }
        Action::Attach => {
            let target = check.required(Column::Target, action)?;
            if let Some(why) = provider_of(kind).device_id_problem(target) {
                check.error(format!(
                    "target: `{target}` is not a device id for {kind} ({why})"
                ));
                return None;
            }
            Operation::Attach {
                target: target.to_string(),
            }
        }
        Action::Register => {
            let code = check.required(Column::RegistrationCode, action)?;
            if let Some(problem) = provider_of(kind).registration_code_problem(code) {
                check.error(format!(
                    "registration_code `{code}` is malformed ({problem})"
                ));
                return None;
            }
            Operation::Register {
                registration_code: code.to_string(),
            }
        }
        Action::EuiccAudit => Operation::EuiccAudit {
            validity_period: validity_period?,
        },
        Action::ProfileDownload => {
            let code = check.required(Column::ActivationCode, action)?;
            let activation_code = match ActivationCode::parse(code) {
                Ok(c) => c,
                Err(message) => {
                    check.error(message);
                    return None;
                }
            };
            Operation::ProfileDownload {
                activation_code,
                enable: enable.unwrap_or(false),
                rollback,
                validity_period: validity_period?,
            }
        }
        Action::ProfileEnable => {
            if enable == Some(false) {
                check.error(
                    "`enable` is false on `profile-enable`, which always enables; remove it".into(),
                );
                return None;
            }
            Operation::ProfileEnable {
                profile_iccid: profile(check)?,
                rollback,
                validity_period: validity_period?,
            }
        }
        Action::ProfileFallback => Operation::ProfileFallback {
            profile_iccid: profile(check)?,
            validity_period: validity_period?,
        },
        Action::ProfileDelete => Operation::ProfileDelete {
            profile_iccid: profile(check)?,
            validity_period: validity_period?,
        },
    })
}

/// A `move` target in the form its provider uses (Twilio Fleet SID or unique name, Telnyx
/// SIM card group UUID, emnify organisation id: `Provider::move_target_problem`).
fn check_move_target(check: &mut RowCheck<'_>, kind: ProviderKind, target: &str) -> Option<()> {
    match provider_of(kind).move_target_problem(target) {
        Some(why) => {
            check.error(format!(
                "target: `{target}` is not a valid move target for {kind} ({why})"
            ));
            None
        }
        None => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn raw(pairs: &[(Column, &str)]) -> RawRow {
        let mut row = RawRow {
            line: 2,
            ..RawRow::default()
        };
        for (col, value) in pairs {
            row.values[col.index()] = Some(value.to_string());
        }
        row.extra.push((Arc::from("ticket"), "INC-1".into()));
        row
    }

    fn errors(pairs: &[(Column, &str)]) -> Vec<String> {
        parse_row(&raw(pairs), &ParseOptions::default())
            .unwrap_err()
            .into_iter()
            .map(|d| d.message)
            .collect()
    }

    const ICCID: &str = "89883030000080139311";
    const EID: &str = "89049011803455664400046832584649";

    #[test]
    fn a_plain_suspend() {
        let parsed = parse_row(
            &raw(&[
                (Column::Action, "suspend"),
                (Column::Provider, "emnify"),
                (Column::Iccid, ICCID),
            ]),
            &ParseOptions::default(),
        )
        .unwrap();
        assert_eq!(parsed.row.operation, Operation::Suspend);
        assert_eq!(parsed.row.id, "2");
        assert_eq!(parsed.row.kind, ProviderKind::Emnify);
        assert_eq!(parsed.row.extra.len(), 1);
    }

    #[test]
    fn unsupported_action_names_the_supported_ones() {
        let e = errors(&[
            (Column::Action, "standby"),
            (Column::Provider, "emnify"),
            (Column::Iccid, ICCID),
        ]);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("does not support `standby`"), "{e:?}");
        assert!(e[0].contains("activate, suspend, delete"), "{e:?}");
    }

    #[test]
    fn all_problems_of_a_row_are_reported() {
        let e = errors(&[
            (Column::Action, "profile-download"),
            (Column::Provider, "emnify"),
            (Column::Eid, EID),
            (Column::Enable, "maybe"),
            (Column::ValidityPeriod, "0"),
            (Column::NotBefore, "tomorrow"),
        ]);
        let joined = e.join("\n");
        assert!(joined.contains("not a boolean"), "{joined}");
        assert!(joined.contains("validity_period"), "{joined}");
        assert!(joined.contains("RFC 3339"), "{joined}");
        assert!(joined.contains("needs a `activation_code`"), "{joined}");
    }

    #[test]
    fn inapplicable_parameters_are_errors() {
        let e = errors(&[
            (Column::Action, "suspend"),
            (Column::Provider, "emnify"),
            (Column::Iccid, ICCID),
            (Column::Rollback, "true"),
        ]);
        assert!(
            e[0].contains("`rollback` does not apply to `suspend`"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_provider_and_action_get_hints() {
        let e = errors(&[
            (Column::Action, "suspnd"),
            (Column::Provider, "emnfy"),
            (Column::Iccid, ICCID),
        ]);
        assert!(
            e.iter().any(|m| m.contains("did you mean `suspend`")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.contains("did you mean `emnify`")),
            "{e:?}"
        );
    }

    #[test]
    fn default_provider_fills_blank_cells() {
        let options = ParseOptions {
            default_provider: Some("telnyx".into()),
            ..ParseOptions::default()
        };
        let parsed = parse_row(
            &raw(&[(Column::Action, "standby"), (Column::Iccid, ICCID)]),
            &options,
        )
        .unwrap();
        assert_eq!(parsed.row.provider, "telnyx");
    }

    #[test]
    fn move_targets_per_provider() {
        let ok = |kind: &str, target: &str| {
            parse_row(
                &raw(&[
                    (Column::Action, "move"),
                    (Column::Provider, kind),
                    (Column::Iccid, ICCID),
                    (Column::Target, target),
                ]),
                &ParseOptions::default(),
            )
            .is_ok()
        };
        assert!(ok("emnify", "12345"));
        assert!(!ok("emnify", "org-a"));
        assert!(ok("telnyx", "6a09cdc3-8948-47f0-aa62-74ac943d6c58"));
        assert!(!ok("telnyx", "group-a"));
        assert!(ok("twilio", "HF0123456789abcdef0123456789abcdef"));
        assert!(ok("twilio", "my-fleet"));
        assert!(!ok("twilio", "HF0123456789abcdef0123456789abcdeg"));
    }
}
