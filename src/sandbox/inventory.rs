//! The deterministic inventory of SPEC 6: which identifiers SIM number `i` and eUICC number `k`
//! have at each provider, and the reverse (identifier → number) without any lookup table, so
//! that a sandbox of a million SIMs costs no index memory.

use crate::job::ids::{eid_complete, luhn_check_digit, luhn_complete};

pub const EMNIFY_PREFIX: &str = "8988303";
pub const TWILIO_PREFIX: &str = "8988307";
pub const TELNYX_PREFIX: &str = "8901260";
pub const EID_PREFIX: &str = "89049032";
/// Profile ICCIDs are `prefix + (PROFILE_BASE + k)`.
pub const PROFILE_BASE: u64 = 900_000_000_000;

/// The 20-digit ICCID (with Luhn digit) of SIM `i` under `prefix`.
pub fn iccid(prefix: &str, i: u64) -> String {
    luhn_complete(&format!("{prefix}{i:012}"))
}

/// The SIM number of an ICCID under `prefix`: accepts the 20-digit form with a correct Luhn
/// digit, or the 19-digit form without it (emnify's `iccid`).
pub fn sim_number(prefix: &str, iccid: &str) -> Option<u64> {
    let body = match iccid.len() {
        20 => {
            let (body, check) = iccid.split_at(19);
            (luhn_check_digit(body)? == check.as_bytes()[0].wrapping_sub(b'0')).then_some(body)?
        }
        19 => iccid,
        _ => return None,
    };
    let number = body.strip_prefix(prefix)?;
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// The EID of eUICC `k`.
pub fn eid(k: u64) -> String {
    eid_complete(&format!("{EID_PREFIX}{k:022}"))
}

/// The eUICC number of an EID (check digits verified).
pub fn euicc_number(eid: &str) -> Option<u64> {
    if eid.len() != 32 || eid != crate::sandbox::inventory::eid(eid[8..30].parse().ok()?) {
        return None;
    }
    eid[8..30].parse().ok()
}

/// Registration code of a not-yet-registered SIM: `RC` + the last 8 digits of its ICCID.
pub fn registration_code(iccid: &str) -> String {
    format!("RC{}", &iccid[iccid.len() - 8..])
}

/// ICCID of eUICC `k`'s emnify bootstrap profile.
pub fn bootstrap_profile(k: u64) -> String {
    iccid(EMNIFY_PREFIX, PROFILE_BASE + k)
}

/// ICCID of eUICC `k`'s operational profile (enabled at start).
pub fn operational_profile(k: u64) -> String {
    iccid(TELNYX_PREFIX, PROFILE_BASE + k)
}

/// ICCID of the profile a `profile-download` installs on eUICC `k`.
pub fn downloaded_profile(k: u64) -> String {
    iccid(TWILIO_PREFIX, PROFILE_BASE + k)
}

/// Every tenth SIM starts suspended / inactive / disabled.
pub fn starts_suspended(i: u64) -> bool {
    i % 10 == 0
}

/// The status Telnyx itself has put SIM `i` in, when the sandbox shows such SIMs
/// (`--system-statuses`): of every hundred registered SIMs, number 91 has exceeded its data
/// limit, 92 sits in a device not on its authorised IMEI list, 93 is blocked and 94 abolished.
/// Telnyx's SIM lifecycle page (developers.telnyx.com/docs/iot-sim/sim-lifecycle, "System
/// imposed"): set by Telnyx, not by API calls; the SIM cannot transition while in them.
pub fn telnyx_system_status(i: u64) -> Option<&'static str> {
    match i % 100 {
        91 => Some("data_limit_exceeded"),
        92 => Some("unauthorized_imei"),
        93 => Some("blocked"),
        94 => Some("abolished"),
        _ => None,
    }
}

/// Whether emnify refuses to delete SIM `i` with 403, as it refuses a reseller deleting a SIM
/// it sold (emnify-sim-endpoint-euicc.json, DELETE /api/v1/sim/{sim_id}): number 99 of every
/// hundred.
pub fn emnify_delete_refused(i: u64) -> bool {
    i % 100 == 99
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iccids_round_trip_in_both_forms() {
        let c = iccid(EMNIFY_PREFIX, 42);
        assert_eq!(c.len(), 20);
        assert_eq!(sim_number(EMNIFY_PREFIX, &c), Some(42));
        assert_eq!(sim_number(EMNIFY_PREFIX, &c[..19]), Some(42));
        assert_eq!(sim_number(TWILIO_PREFIX, &c), None);
        let mut bad = c.clone().into_bytes();
        bad[19] = b'0' + (bad[19] - b'0' + 1) % 10;
        assert_eq!(
            sim_number(EMNIFY_PREFIX, std::str::from_utf8(&bad).unwrap()),
            None
        );
    }

    #[test]
    fn eids_round_trip() {
        let e = eid(7);
        assert!(crate::job::Eid::parse(&e, crate::job::IdStrictness::Strict).is_ok());
        assert_eq!(euicc_number(&e), Some(7));
        assert_eq!(euicc_number("89049011803455664400046832584649"), None);
    }

    #[test]
    fn registration_codes_are_ten_characters() {
        let c = iccid(TWILIO_PREFIX, 10_001);
        assert_eq!(registration_code(&c), format!("RC{}", &c[12..]));
        assert_eq!(registration_code(&c).len(), 10);
    }
}
