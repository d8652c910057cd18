//! What an account at a provider does over the wire, as the pipeline sees it: read the
//! inventory page by page, read one target, send a row's change, read an asynchronous change
//! back (one by one, or many at once where the provider can list them). Each provider's
//! module implements it over the shared HTTP layer; the pipeline holds a `dyn Account` and
//! never matches on the provider.

use std::future::Future;
use std::pin::Pin;

use crate::job::model::JobRow;

use super::error::ProviderError;
use super::facts::Provider;
use super::http::Http;
use super::state::{Observed, Polled, Sent, SimState};

/// A provider call in flight.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Where a walk over the inventory stands: numbered pages (emnify, Telnyx) or the next page's
/// path (Twilio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    First,
    Number(u64),
    Path(String),
}

impl Cursor {
    /// The page number a walk over numbered pages is at; `provider` names who pages so, for
    /// the error a link cursor gets.
    pub fn number(&self, provider: &str) -> Result<u64, ProviderError> {
        match self {
            Cursor::First => Ok(1),
            Cursor::Number(n) => Ok(*n),
            Cursor::Path(_) => Err(ProviderError::permanent(format!(
                "{provider} pages by number, not by link"
            ))),
        }
    }
}

/// One page of the SIM inventory.
pub struct Page {
    /// (ICCID, state) of each SIM listed.
    pub sims: Vec<(String, SimState)>,
    pub next: Option<Cursor>,
    /// How many pages there are, where the provider says (numbered pages).
    pub pages: Option<u64>,
}

impl Page {
    /// Page `number` of `pages` numbered pages.
    pub fn numbered(sims: Vec<(String, SimState)>, number: u64, pages: u64) -> Page {
        Page {
            sims,
            next: (number < pages).then_some(Cursor::Number(number + 1)),
            pages: Some(pages),
        }
    }
}

/// A device (emnify endpoint) as the device listing shows it, with its SIM's ICCID.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub iccid: String,
    pub id: String,
    /// The device's status wording (`Enabled`, `Disabled`).
    pub status: String,
}

pub trait Account: Send + Sync {
    /// What simbatch believes about the provider.
    fn provider(&self) -> &'static dyn Provider;

    fn http(&self) -> &Http;

    /// One page of the inventory from `cursor`; `group` narrows it where the provider can
    /// (Twilio's Fleet), and may be ignored elsewhere (the caller filters too).
    fn sim_page<'a>(&'a self, cursor: &'a Cursor, group: Option<&'a str>) -> Call<'a, Page>;

    /// What the provider shows for the row's target now.
    fn observe<'a>(&'a self, row: &'a JobRow) -> Call<'a, Observed>;

    /// The group id a `move` compares against (a Twilio Fleet name resolves to its SID).
    fn move_target<'a>(&'a self, _row: &'a JobRow) -> Call<'a, Option<String>> {
        Box::pin(async { Ok(None) })
    }

    /// Sends the row's change; `after` is what pre-flight expects it to produce.
    fn send<'a>(
        &'a self,
        row: &'a JobRow,
        observed: &'a Observed,
        after: &'a str,
    ) -> Call<'a, Sent>;

    /// Reads an asynchronous change by its reference.
    fn poll<'a>(&'a self, reference: &'a str, after: &'a str) -> Call<'a, Polled>;

    /// Page `page` (from 1) of the devices that have a SIM, only those in `status` when given,
    /// and how many pages there are (providers with [`Provider::bulk`] actions).
    fn devices_page<'a>(
        &'a self,
        _page: u64,
        _status: Option<&'a str>,
    ) -> Call<'a, (Vec<Device>, u64)> {
        Box::pin(async { Err(ProviderError::permanent("this provider has no devices")) })
    }

    /// Enables or disables the devices `ids` in one request (a bulk update). One such request
    /// at a time per account.
    fn set_devices<'a>(&'a self, _ids: &'a [String], _enabled: bool) -> Call<'a, ()> {
        Box::pin(async {
            Err(ProviderError::permanent(
                "this provider has no bulk updates",
            ))
        })
    }

    /// Puts SIMs on devices, or takes a device's SIM off (`None`): `(device id, SIM id)` pairs
    /// in one request (a bulk update, like [`Account::set_devices`]).
    fn assign_devices<'a>(&'a self, _pairs: &'a [(String, Option<String>)]) -> Call<'a, ()> {
        Box::pin(async {
            Err(ProviderError::permanent(
                "this provider has no bulk updates",
            ))
        })
    }

    /// Deletes the SIMs `ids` (provider ids, each on no device) in one request.
    fn delete_sims<'a>(&'a self, _ids: &'a [String]) -> Call<'a, ()> {
        Box::pin(async {
            Err(ProviderError::permanent(
                "this provider has no bulk deletes",
            ))
        })
    }

    /// Whether a change with this reference can be confirmed in a batch.
    fn batchable(&self, _reference: &str) -> bool {
        false
    }

    /// Confirms many changes at once, by listing them: one result per `(reference, after)`.
    /// `patient`: nothing presses (dispatch is busy, no group waits, no deadline is near), so
    /// a proof that costs much per change may wait for more changes to share it
    /// ([`Polled::Waiting`]).
    fn confirm_batch<'a>(
        &'a self,
        _waiting: &'a [(String, String)],
        _patient: bool,
    ) -> Call<'a, Vec<Polled>> {
        Box::pin(async {
            Err(ProviderError::permanent(
                "this provider's changes are confirmed one by one",
            ))
        })
    }
}
