//! The typed job model: provider kinds, the action vocabulary of SPEC 1.2 (which provider
//! supports which action is each provider's own fact: `provider::Provider::supports`), and one
//! validated job row. Nothing past the parser handles an
//! action or a parameter as a string.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{Eid, Iccid};

/// The kinds of provider simbatch speaks to. A job's `provider` column names a configured
/// provider (see `config`), and each configured provider has one of these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Emnify,
    Twilio,
    Telnyx,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Emnify,
        ProviderKind::Twilio,
        ProviderKind::Telnyx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Emnify => "emnify",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Telnyx => "telnyx",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown provider kind `{s}` (expected emnify, twilio or telnyx)")
            })
    }
}

/// What an action works on: a SIM (by ICCID) or an eUICC (by EID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Sim,
    Euicc,
}

/// The verbs of SPEC 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Activate,
    Suspend,
    Standby,
    Delete,
    EnableDevice,
    DisableDevice,
    Move,
    Register,
    EuiccAudit,
    ProfileDownload,
    ProfileEnable,
    ProfileFallback,
    ProfileDelete,
    /// Puts a SIM on a device (emnify endpoint): what `revert.csv` writes for a device that a
    /// refused delete left without its SIM.
    Attach,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::Activate,
        Action::Suspend,
        Action::Standby,
        Action::Delete,
        Action::EnableDevice,
        Action::DisableDevice,
        Action::Move,
        Action::Register,
        Action::EuiccAudit,
        Action::ProfileDownload,
        Action::ProfileEnable,
        Action::ProfileFallback,
        Action::ProfileDelete,
        Action::Attach,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Activate => "activate",
            Action::Suspend => "suspend",
            Action::Standby => "standby",
            Action::Delete => "delete",
            Action::EnableDevice => "enable-device",
            Action::DisableDevice => "disable-device",
            Action::Move => "move",
            Action::Register => "register",
            Action::EuiccAudit => "euicc-audit",
            Action::ProfileDownload => "profile-download",
            Action::ProfileEnable => "profile-enable",
            Action::ProfileFallback => "profile-fallback",
            Action::ProfileDelete => "profile-delete",
            Action::Attach => "attach",
        }
    }

    pub fn target_kind(self) -> TargetKind {
        match self {
            Action::EuiccAudit
            | Action::ProfileDownload
            | Action::ProfileEnable
            | Action::ProfileFallback
            | Action::ProfileDelete => TargetKind::Euicc,
            _ => TargetKind::Sim,
        }
    }

    /// Irreversible actions need `--allow-irreversible` (SPEC 3.4).
    pub fn is_irreversible(self) -> bool {
        matches!(self, Action::Delete | Action::ProfileDelete)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = ();
    /// Case-insensitive; `_` is accepted for `-` (`enable_device`), as operators type both.
    fn from_str(s: &str) -> Result<Self, ()> {
        let normalized = s.trim().to_ascii_lowercase().replace('_', "-");
        Action::ALL
            .into_iter()
            .find(|a| a.name() == normalized)
            .ok_or(())
    }
}

/// A GSMA activation code `1$<SM-DP+ address>$<matching id>[$<oid>[$<confirmation flag>]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivationCode(String);

impl ActivationCode {
    pub fn parse(value: &str) -> Result<ActivationCode, String> {
        let parts: Vec<&str> = value.split('$').collect();
        let hint = "expected `1$<SM-DP+ address>$<matching id>`";
        if parts.len() < 3 || parts.len() > 5 {
            return Err(format!("activation_code `{value}` is malformed: {hint}"));
        }
        if parts[0] != "1" {
            return Err(format!(
                "activation_code `{value}` starts with `{}`: only format `1` exists; {hint}",
                parts[0]
            ));
        }
        let host_ok = !parts[1].is_empty()
            && parts[1]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
        if !host_ok {
            return Err(format!(
                "activation_code `{value}` has no valid SM-DP+ address (`{}`); {hint}",
                parts[1]
            ));
        }
        if parts[2].is_empty() || parts[2].bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(format!(
                "activation_code `{value}` has no valid matching id; {hint}"
            ));
        }
        Ok(ActivationCode(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Seconds an eUICC operation stays valid at the provider (SPEC 1.1: 1..=86400, default 86400).
pub const DEFAULT_VALIDITY_PERIOD: u32 = 86_400;

/// One action with exactly the parameters it takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    Activate,
    Suspend,
    Standby,
    Delete {
        report_lost: bool,
    },
    EnableDevice,
    DisableDevice,
    Move {
        target: String,
    },
    Register {
        registration_code: String,
    },
    EuiccAudit {
        validity_period: u32,
    },
    ProfileDownload {
        activation_code: ActivationCode,
        enable: bool,
        rollback: bool,
        validity_period: u32,
    },
    ProfileEnable {
        profile_iccid: Iccid,
        rollback: bool,
        validity_period: u32,
    },
    ProfileFallback {
        profile_iccid: Iccid,
        validity_period: u32,
    },
    ProfileDelete {
        profile_iccid: Iccid,
        validity_period: u32,
    },
    /// The SIM onto device (endpoint) `target`.
    Attach {
        target: String,
    },
}

impl Operation {
    pub fn action(&self) -> Action {
        match self {
            Operation::Activate => Action::Activate,
            Operation::Suspend => Action::Suspend,
            Operation::Standby => Action::Standby,
            Operation::Delete { .. } => Action::Delete,
            Operation::EnableDevice => Action::EnableDevice,
            Operation::DisableDevice => Action::DisableDevice,
            Operation::Move { .. } => Action::Move,
            Operation::Register { .. } => Action::Register,
            Operation::EuiccAudit { .. } => Action::EuiccAudit,
            Operation::ProfileDownload { .. } => Action::ProfileDownload,
            Operation::ProfileEnable { .. } => Action::ProfileEnable,
            Operation::ProfileFallback { .. } => Action::ProfileFallback,
            Operation::ProfileDelete { .. } => Action::ProfileDelete,
            Operation::Attach { .. } => Action::Attach,
        }
    }
}

/// What a row changes: a SIM or an eUICC. The other identifier, when the file carries it
/// (exports write both), is kept for the reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Sim { iccid: Iccid, eid: Option<Eid> },
    Euicc { eid: Eid, iccid: Option<Iccid> },
}

impl Target {
    pub fn iccid(&self) -> Option<&Iccid> {
        match self {
            Target::Sim { iccid, .. } => Some(iccid),
            Target::Euicc { iccid, .. } => iccid.as_ref(),
        }
    }

    pub fn eid(&self) -> Option<&Eid> {
        match self {
            Target::Sim { eid, .. } => eid.as_ref(),
            Target::Euicc { eid, .. } => Some(eid),
        }
    }

    /// The identifier the action is addressed to.
    pub fn primary(&self) -> &str {
        match self {
            Target::Sim { iccid, .. } => iccid.as_str(),
            Target::Euicc { eid, .. } => eid.as_str(),
        }
    }
}

/// One validated row of a job file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// 1-based line of the file on which the row starts (for `FILE:LINE` messages and reports).
    pub line: u64,
    /// The operator's own key; the line number when the file has none.
    pub id: String,
    /// The configured provider name from the `provider` column (or `--provider`).
    pub provider: String,
    pub kind: ProviderKind,
    pub target: Target,
    pub operation: Operation,
    pub group: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    /// Columns simbatch does not know, carried through untouched, in file order.
    pub extra: Vec<(Arc<str>, String)>,
}

impl JobRow {
    pub fn action(&self) -> Action {
        self.operation.action()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip_and_accept_underscores() {
        for action in Action::ALL {
            assert_eq!(action.name().parse::<Action>(), Ok(action));
        }
        assert_eq!("Enable_Device".parse::<Action>(), Ok(Action::EnableDevice));
        assert!("deactivate".parse::<Action>().is_err());
    }

    #[test]
    fn activation_codes() {
        assert!(ActivationCode::parse("1$smdp.example.com$ABC-123").is_ok());
        assert!(ActivationCode::parse("1$smdp.example.com$ABC$1.2.3$1").is_ok());
        for bad in [
            "",
            "smdp.example.com",
            "2$smdp.example.com$X",
            "1$$X",
            "1$smdp.example.com$",
            "1$smdp example$X",
        ] {
            assert!(ActivationCode::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
