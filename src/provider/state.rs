//! The provider-neutral view of a target that pre-flight, reconciliation and reports work with.
//! Status texts stay in the provider's own words (`Activated`, `inactive`, `disabled`) because
//! that is what `before`/`after` in the reports must say and what a revert job restores.

/// A SIM as the provider shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct SimState {
    /// The provider's id (emnify SIM id, Twilio SID, Telnyx UUID).
    pub id: String,
    /// The provider's status wording.
    pub status: String,
    /// False while an asynchronous change is under way (Twilio `scheduled`, Telnyx `enabling`…).
    pub settled: bool,
    /// customer_org (emnify), Fleet SID (Twilio), SIM card group (Telnyx).
    pub group: Option<String>,
    /// emnify only: the endpoint (id, status wording) the SIM is attached to.
    pub device: Option<(String, String)>,
    /// The eUICC's EID, where the provider shows it with the SIM (Telnyx eSIMs).
    pub eid: Option<String>,
}

/// A profile on an eUICC.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileState {
    pub iccid: String,
    pub status: String,
    pub enabled: bool,
    pub fallback: bool,
    pub deleted: bool,
}

/// An eUICC operation as the provider shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationState {
    pub id: String,
    /// emnify action id (1 audit … 5 delete).
    pub action: u8,
    /// emnify status id (1 Scheduled, 2 Succeeded, 3 Failed, 4 Expired, 5 Canceled).
    pub status: u8,
    pub iccid: Option<String>,
    pub error: Option<String>,
}

/// An eUICC as the provider shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct EuiccState {
    pub id: String,
    pub profiles: Vec<ProfileState>,
    /// Its operations, newest last (scheduled ones included).
    pub operations: Vec<OperationState>,
}

impl EuiccState {
    pub fn enabled_profile(&self) -> Option<&ProfileState> {
        self.profiles.iter().find(|p| p.enabled && !p.deleted)
    }

    pub fn fallback_profile(&self) -> Option<&ProfileState> {
        self.profiles.iter().find(|p| p.fallback && !p.deleted)
    }

    pub fn profile(&self, iccid: &str) -> Option<&ProfileState> {
        self.profiles
            .iter()
            .find(|p| p.iccid == iccid && !p.deleted)
    }
}

/// What a change request came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// Applied synchronously; the state after.
    Done { after: String },
    /// Accepted; confirm it later through this reference.
    Accepted { reference: String },
}

/// What a confirmation poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    Waiting,
    Done { after: String },
    Failed { reason: String },
}
