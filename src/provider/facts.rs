//! What simbatch believes about a kind of provider, whatever the account: its status
//! vocabulary, which transitions pre-flight refuses, the inverse of a status change for
//! `revert`, the forms of a `move` target, its documented limits and defaults. Pure and
//! static — reports and `revert` use it from the state store alone, without credentials —
//! and implemented once per provider in that provider's module, next to its wire calls
//! ([`super::account::Account`]). The pipeline asks this trait; it never matches on the kind.

use crate::job::model::{Action, JobRow, Operation, ProviderKind};

use super::error::ProviderError;
use super::limiter::LaneLimits;
use super::state::{Decision, EuiccState, Observed, SimState};

/// Names of the environment variables that hold an account's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialEnv {
    Token(String),
    Basic { username: String, password: String },
}

pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// The real provider's API root (the client adds `/api/v1`, `/v1`, `/v2`).
    fn default_base_url(&self) -> &'static str;

    /// The environment variables credentials are read from by default.
    fn default_credentials(&self) -> CredentialEnv;

    /// The limits the provider documents, as the lane's rate gate keeps them.
    fn documented_limits(&self) -> LaneLimits;

    /// SPEC 1.2's support table.
    fn supports(&self, action: Action) -> bool;

    /// The error of a delete the provider `refused` after the SIM `sim` was released from
    /// `device` for it, once putting it back was tried (`back`): the row's reason says both,
    /// and what the device was left as ([`ProviderError::left`]).
    fn delete_refused(
        &self,
        refused: &ProviderError,
        _device: &str,
        _sim: &str,
        _back: Result<(), &ProviderError>,
    ) -> ProviderError {
        refused.clone()
    }

    /// Whether rows of `action` can be applied many at once, in one request per chunk (see
    /// [`super::account::Account::set_devices`], [`super::account::Account::delete_sims`]).
    fn bulk(&self, _action: Action) -> bool {
        false
    }

    /// Why `target` is not a `move` target in this provider's form, if it is not.
    fn move_target_problem(&self, target: &str) -> Option<&'static str>;

    /// Why `target` is not a device (endpoint) id in this provider's form, if it is not
    /// (`attach`; only providers with devices support it).
    fn device_id_problem(&self, _target: &str) -> Option<&'static str> {
        None
    }

    /// Why `code` is not a `register` code in this provider's form, if it is not.
    fn registration_code_problem(&self, code: &str) -> Option<&'static str> {
        (!code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .then_some("letters, digits and dashes only")
    }

    /// What an operator should know before `action` runs here, said by `plan` and the run's
    /// banner (e.g. that it starts billing).
    fn action_note(&self, _action: Action) -> Option<&'static str> {
        None
    }

    /// Whether a `delete` here can say the SIM was lost or stolen (the `report_lost` column).
    fn delete_reports_lost(&self) -> bool {
        false
    }

    /// The status wording an action aims at (`Activated`, `inactive`, `standby`…).
    fn target_status(&self, op: &Operation) -> Option<&'static str>;

    /// The wording of a device (endpoint) enabled or disabled; `None` without devices.
    fn device_status(&self, _enabled: bool) -> Option<&'static str> {
        None
    }

    /// Why no status change of this SIM is possible now, whatever the target.
    fn refuses_any_change(&self, _sim: &SimState) -> Option<String> {
        None
    }

    /// Why the provider refuses `sim` → `want`, if it does.
    fn refuses_transition(&self, sim: &SimState, want: &str) -> Option<String>;

    /// Whether a SIM the provider still shows is deleted.
    fn shows_deleted(&self, _sim: &SimState) -> bool {
        false
    }

    /// Whether the inventory listing shows what this action changes (emnify's listing does
    /// not show a device's status: such rows are read live).
    fn listing_shows(&self, _action: Action) -> bool {
        true
    }

    /// The status a SIM shows once registered here (`None`: no registration here).
    fn registered_status(&self) -> Option<&'static str> {
        None
    }

    /// The eUICC as the operation `op` leaves it, once it succeeded (for `plan`'s later steps
    /// of a group, see [`super::simulate`]).
    fn euicc_after(&self, euicc: &EuiccState, _op: &Operation) -> EuiccState {
        euicc.clone()
    }

    /// Pre-flight for an eUICC row.
    fn decide_euicc(&self, op: &Operation, _euicc: &EuiccState) -> Decision {
        Decision::Fail {
            reason: format!("`{}` does not apply to an eUICC here", op.action()),
            before: None,
        }
    }

    /// The newest operation the target shows now (its id; `""` for none), kept in the
    /// "sending" marker so that a resume can tell an operation the interrupted attempt
    /// scheduled from older ones; `None` for targets without operations.
    fn operations_before(&self, _observed: &Observed) -> Option<String> {
        None
    }

    /// The device `row`'s change takes the SIM off before it is applied (an emnify delete: the
    /// SIM is first released from its endpoint), kept in the "sending" marker: a resume that
    /// finds the SIM on no device knows where the interrupted attempt took it from.
    fn releases_from(&self, _row: &JobRow, _observed: &Observed) -> Option<String> {
        None
    }

    /// An operation created after `before` (the marker's [`Provider::operations_before`])
    /// that is the row's own (an earlier attempt got through): its reference, to confirm
    /// instead of scheduling another. `None` for `before` when no marker says what was there.
    fn adopted_operation(
        &self,
        _row: &JobRow,
        _observed: &Observed,
        _before: Option<&str>,
    ) -> Option<String> {
        None
    }

    /// The action that puts a SIM back into `status` (for `revert`).
    fn returns_to(&self, status: &str) -> Option<Operation>;

    /// The action that undoes what a failed row left behind (its `after`, from
    /// [`super::ProviderError::left`]), for `revert`.
    fn repairs(&self, _left: &str) -> Option<Operation> {
        None
    }
}
