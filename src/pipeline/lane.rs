//! A provider lane's client and the per-action translation of a job row into that provider's
//! calls: observe the target, send the change, poll an asynchronous change. References to
//! asynchronous changes are strings the lane alone interprets (stored in the checkpoint).

use crate::job::{JobRow, Operation, ProviderKind};
use crate::provider::emnify::{Emnify, OperationRequest};
use crate::provider::http::Http;
use crate::provider::telnyx::Telnyx;
use crate::provider::twilio::Twilio;
use crate::provider::{Polled, ProviderError, Sent};

use super::preflight::{operation_code, Observed};

pub enum Client {
    Emnify(Emnify),
    Twilio(Twilio),
    Telnyx(Telnyx),
}

/// One configured provider: its name in job files, its kind and its client.
pub struct Lane {
    pub name: String,
    pub kind: ProviderKind,
    pub client: Client,
    /// Workers of this lane (requests in flight at once, at most).
    pub concurrency: usize,
}

impl Lane {
    pub fn http(&self) -> &Http {
        match &self.client {
            Client::Emnify(c) => c.http(),
            Client::Twilio(c) => c.http(),
            Client::Telnyx(c) => c.http(),
        }
    }

    /// What the provider shows for the row's target now.
    pub async fn observe(&self, row: &JobRow) -> Result<Observed, ProviderError> {
        let iccid = row.target.iccid().map(|i| i.as_str()).unwrap_or_default();
        let found = match (&self.client, row.action().target_kind()) {
            (Client::Emnify(c), crate::job::TargetKind::Euicc) => {
                let eid = row.target.eid().expect("eUICC rows have an EID").as_str();
                return Ok(c
                    .find_euicc(eid)
                    .await?
                    .map_or(Observed::Missing, Observed::Euicc));
            }
            (Client::Emnify(c), _) => {
                let with_device = matches!(
                    row.operation,
                    Operation::EnableDevice | Operation::DisableDevice
                );
                c.find_sim(iccid, with_device).await?
            }
            (Client::Twilio(c), _) => c.find_sim(iccid).await?,
            (Client::Telnyx(c), _) => c.find_sim(iccid).await?,
        };
        Ok(found.map_or(Observed::Missing, Observed::Sim))
    }

    /// The group id a `move` compares against (Twilio Fleet names resolve to SIDs).
    pub async fn move_target(&self, row: &JobRow) -> Result<Option<String>, ProviderError> {
        match (&self.client, &row.operation) {
            (Client::Twilio(c), Operation::Move { target }) => c.fleet_sid(target).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Sends the row's change; `after` is what pre-flight expects it to produce.
    pub async fn send(
        &self,
        row: &JobRow,
        observed: &Observed,
        after: &str,
    ) -> Result<Sent, ProviderError> {
        let sim = match observed {
            Observed::Sim(s) => Some(s),
            _ => None,
        };
        let sim_id = || {
            sim.map(|s| s.id.clone())
                .ok_or_else(|| ProviderError::permanent("the SIM was not found"))
        };
        match (&self.client, &row.operation) {
            (Client::Emnify(c), Operation::Activate | Operation::Suspend) => {
                c.set_sim_status(&sim_id()?, after).await?;
                Ok(Sent::Done {
                    after: after.into(),
                })
            }
            (Client::Emnify(c), Operation::Move { target }) => {
                c.set_customer_org(&sim_id()?, target).await?;
                Ok(Sent::Done {
                    after: target.clone(),
                })
            }
            (Client::Emnify(c), Operation::EnableDevice | Operation::DisableDevice) => {
                let device = sim
                    .and_then(|s| s.device.clone())
                    .ok_or_else(|| ProviderError::permanent("no endpoint"))?;
                c.set_endpoint_status(&device.0, matches!(row.operation, Operation::EnableDevice))
                    .await?;
                Ok(Sent::Done {
                    after: after.into(),
                })
            }
            (Client::Emnify(c), Operation::Delete { .. }) => {
                let endpoint = sim.and_then(|s| s.device.as_ref().map(|d| d.0.clone()));
                c.delete_sim(&sim_id()?, endpoint.as_deref()).await?;
                Ok(Sent::Done {
                    after: "deleted".into(),
                })
            }
            (Client::Emnify(c), op) => {
                let Observed::Euicc(euicc) = observed else {
                    return Err(ProviderError::permanent("the eUICC was not found"));
                };
                let request = euicc_request(op);
                let id = c.schedule(&euicc.id, &request).await?;
                Ok(Sent::Accepted {
                    reference: format!("{}/{id}", euicc.id),
                })
            }
            (Client::Twilio(c), Operation::Activate | Operation::Suspend) => {
                c.update(&sim_id()?, &[("Status", after)]).await
            }
            (Client::Twilio(c), Operation::Move { .. }) => {
                c.update(&sim_id()?, &[("Fleet", after)]).await
            }
            (Client::Twilio(c), Operation::Register { registration_code }) => {
                let iccid = row.target.iccid().expect("SIM rows have an ICCID").as_str();
                let sim = c.register(iccid, registration_code).await?;
                Ok(Sent::Done { after: sim.status })
            }
            (Client::Telnyx(c), Operation::Activate) => c.action(&sim_id()?, "enable").await,
            (Client::Telnyx(c), Operation::Suspend) => c.action(&sim_id()?, "disable").await,
            (Client::Telnyx(c), Operation::Standby) => c.action(&sim_id()?, "set_standby").await,
            (Client::Telnyx(c), Operation::Move { .. }) => c.set_group(&sim_id()?, after).await,
            (Client::Telnyx(c), Operation::Delete { report_lost }) => {
                let id = sim_id()?;
                c.delete(&id, *report_lost).await?;
                Ok(Sent::Accepted {
                    reference: format!("delete:{id}"),
                })
            }
            (Client::Telnyx(c), Operation::Register { registration_code }) => {
                let (registered, errors) = c.register(&[registration_code]).await?;
                match registered.into_iter().next() {
                    Some(sim) => Ok(Sent::Accepted {
                        reference: format!("settle:{}", sim.id),
                    }),
                    None => Err(ProviderError::permanent(errors.join("; "))),
                }
            }
            (_, op) => Err(ProviderError::permanent(format!(
                "`{}` is not supported by {}",
                op.action(),
                self.kind
            ))),
        }
    }

    /// Reads an asynchronous change by its reference.
    pub async fn poll(&self, reference: &str, after: &str) -> Result<Polled, ProviderError> {
        match &self.client {
            Client::Emnify(c) => {
                let (euicc, op) = reference
                    .split_once('/')
                    .ok_or_else(|| ProviderError::permanent("malformed reference"))?;
                c.poll_operation(euicc, op).await
            }
            Client::Twilio(c) => c.poll_status(reference, after).await,
            Client::Telnyx(c) => match reference.split_once(':') {
                Some(("delete", id)) => c.poll_deleted(id).await,
                Some(("settle", id)) => c.poll_settled(id).await,
                _ => c.poll_action(reference, after).await,
            },
        }
    }
}

/// The emnify operation request for an eUICC row.
pub fn euicc_request(op: &Operation) -> OperationRequest {
    let (action, iccid, _) = operation_code(op);
    let mut request = OperationRequest {
        action,
        validity_period: crate::job::model::DEFAULT_VALIDITY_PERIOD,
        iccid: iccid.map(str::to_string),
        activation_code: None,
        enable: None,
        rollback: None,
    };
    match op {
        Operation::EuiccAudit { validity_period }
        | Operation::ProfileFallback {
            validity_period, ..
        }
        | Operation::ProfileDelete {
            validity_period, ..
        } => request.validity_period = *validity_period,
        Operation::ProfileDownload {
            activation_code,
            enable,
            rollback,
            validity_period,
        } => {
            request.validity_period = *validity_period;
            request.activation_code = Some(activation_code.as_str().to_string());
            request.enable = Some(*enable);
            request.rollback = Some(*rollback);
        }
        Operation::ProfileEnable {
            rollback,
            validity_period,
            ..
        } => {
            request.validity_period = *validity_period;
            request.rollback = Some(*rollback);
        }
        _ => {}
    }
    request
}
