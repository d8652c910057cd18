//! The provider-neutral view of a target that pre-flight, reconciliation and reports work with,
//! and pre-flight's verdict on a row.
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

/// What the provider shows for a row's target.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No such SIM/eUICC at this provider (or not registered to the account).
    Missing,
    Sim(SimState),
    Euicc(EuiccState),
}

impl SimState {
    /// After an interrupted change that took this SIM off `released_from` (the marker's
    /// [`crate::provider::Provider::releases_from`]) and did not land: a SIM that shows no device
    /// is taken as still on that one — the release is repeated (the device has no SIM: nothing
    /// changes) and a refusal of the change puts the SIM back there, as it would have without
    /// the interruption. The device's status is not known: it is left blank.
    pub fn as_before_release(&mut self, released_from: Option<&str>) {
        if let (None, Some(device)) = (&self.device, released_from) {
            self.device = Some((device.to_string(), String::new()));
        }
    }
}

/// The pre-flight verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Skip {
        reason: String,
        before: Option<String>,
    },
    Fail {
        reason: String,
        before: Option<String>,
    },
    /// Send the change; `before` is the state it replaces, `after` the state it should produce.
    Send {
        before: Option<String>,
        after: String,
    },
}

impl Decision {
    pub fn skip(reason: impl Into<String>, before: &str) -> Decision {
        Decision::Skip {
            reason: reason.into(),
            before: Some(before.to_string()),
        }
    }

    pub fn fail(reason: impl Into<String>, before: Option<&str>) -> Decision {
        Decision::Fail {
            reason: reason.into(),
            before: before.map(str::to_string),
        }
    }

    pub fn send(before: Option<&str>, after: impl Into<String>) -> Decision {
        Decision::Send {
            before: before.map(str::to_string),
            after: after.into(),
        }
    }
}
