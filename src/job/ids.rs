//! Identifier formats and their check digits: ICCID (ITU-T E.118, Luhn) and EID (ISO/IEC 7064
//! MOD 97-10). Owns parsing and checking of the identifiers that appear in job files; it does
//! not know which provider or action an identifier belongs to.
//!
//! The check-digit functions are shared with the sandbox (which generates its deterministic
//! inventory from them); no HTTP shape lives here.

use std::fmt;

/// How strictly check digits are enforced (SPEC 1.3: strict by default, `--lenient-ids` warns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdStrictness {
    #[default]
    Strict,
    Lenient,
}

/// Why an identifier was refused (or, for a check-digit problem under `--lenient-ids`, warned about).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{value}` is not a number: {what} must contain digits only")]
    NotDigits { what: &'static str, value: String },
    #[error("`{value}` is a number a spreadsheet rounded: the last digits of {what} are lost; format the column as text in the spreadsheet and export the file again")]
    Rounded { what: &'static str, value: String },
    #[error("`{value}` has {len} digits: {what} must have {expected}")]
    Length {
        what: &'static str,
        value: String,
        len: usize,
        expected: &'static str,
    },
    #[error("`{value}` does not start with 89: an ICCID starts with the telecom prefix 89")]
    Prefix { value: String },
    #[error("`{value}` fails its Luhn check digit (expected last digit {expected}); check for a typo, or pass --lenient-ids to accept it with a warning")]
    Luhn { value: String, expected: u8 },
    #[error("`{value}` fails its MOD 97-10 check digits (expected to end in {expected:02}); check for a typo, or pass --lenient-ids to accept it with a warning")]
    Mod97 { value: String, expected: u8 },
}

impl IdError {
    /// A check-digit failure is the only kind `--lenient-ids` may downgrade to a warning: the
    /// providers' own documentation examples often fail it, but a wrong length never works.
    pub fn is_check_digit(&self) -> bool {
        matches!(self, IdError::Luhn { .. } | IdError::Mod97 { .. })
    }
}

/// Luhn check digit for `payload` (the digits before the check digit). `None` if a non-digit is present.
pub fn luhn_check_digit(payload: &str) -> Option<u8> {
    let mut sum = 0u32;
    for (i, b) in payload.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some(((10 - sum % 10) % 10) as u8)
}

/// `payload` followed by its Luhn check digit.
pub fn luhn_complete(payload: &str) -> String {
    let digit = luhn_check_digit(payload).expect("luhn_complete takes digits only");
    format!("{payload}{digit}")
}

/// The remainder of a decimal digit string modulo 97, computed digit by digit (no big integers).
fn mod97(digits: &str) -> u32 {
    digits
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97)
}

/// The two MOD 97-10 check digits for a 30-digit EID body.
pub fn eid_check_digits(body: &str) -> u8 {
    let with_zeros = format!("{body}00");
    (98 - mod97(&with_zeros)) as u8
}

/// `body` (30 digits) followed by its two MOD 97-10 check digits.
pub fn eid_complete(body: &str) -> String {
    format!("{body}{:02}", eid_check_digits(body))
}

/// [`Iccid::canonical`] of any digit string (as a provider's listing gives it).
pub fn canonical_iccid(iccid: &str) -> String {
    if iccid.len() == 19 {
        luhn_complete(iccid)
    } else {
        iccid.to_string()
    }
}

/// Whether `s` is a UUID in its hyphenated form (a Telnyx id).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, len)| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A SIM's ICCID as written in a job file: 19 or 20 digits starting `89`, the last a Luhn digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(String);

/// A parsed identifier and, under `--lenient-ids`, the check-digit problem it was accepted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T> {
    pub value: T,
    pub warning: Option<IdError>,
}

/// `8.98830300000000E+19`: what a spreadsheet makes of a long number it shows in scientific
/// notation.
fn rounded_by_a_spreadsheet(value: &str) -> bool {
    let upper = value.to_ascii_uppercase();
    let Some((mantissa, exponent)) = upper.split_once("E+") else {
        return false;
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    !whole.is_empty()
        && [whole, fraction, exponent]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn all_digits(what: &'static str, value: &str) -> Result<(), IdError> {
    if rounded_by_a_spreadsheet(value) {
        return Err(IdError::Rounded {
            what,
            value: value.to_string(),
        });
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::NotDigits {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn downgrade<T>(
    value: T,
    check: Result<(), IdError>,
    strictness: IdStrictness,
) -> Result<Checked<T>, IdError> {
    match check {
        Ok(()) => Ok(Checked {
            value,
            warning: None,
        }),
        Err(e) if strictness == IdStrictness::Lenient && e.is_check_digit() => Ok(Checked {
            value,
            warning: Some(e),
        }),
        Err(e) => Err(e),
    }
}

impl Iccid {
    /// Parses and checks an ICCID (surrounding whitespace already trimmed by the reader).
    pub fn parse(value: &str, strictness: IdStrictness) -> Result<Checked<Iccid>, IdError> {
        all_digits("an ICCID", value)?;
        if !(19..=20).contains(&value.len()) {
            return Err(IdError::Length {
                what: "an ICCID",
                value: value.to_string(),
                len: value.len(),
                expected: "19 or 20 (including the Luhn check digit)",
            });
        }
        if !value.starts_with("89") {
            return Err(IdError::Prefix {
                value: value.to_string(),
            });
        }
        let (payload, last) = value.split_at(value.len() - 1);
        let expected = luhn_check_digit(payload).expect("digits checked above");
        let check = if last.as_bytes()[0] - b'0' == expected {
            Ok(())
        } else {
            Err(IdError::Luhn {
                value: value.to_string(),
                expected,
            })
        };
        downgrade(Iccid(value.to_string()), check, strictness)
    }

    /// Wraps a value already known to be a well-formed ICCID (e.g. produced by `luhn_complete`).
    pub fn from_trusted(value: String) -> Iccid {
        Iccid(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The one spelling of this SIM that every form of it shares: a 19-digit ICCID is taken as
    /// emnify's `iccid` (without its check digit, SPEC 1.3) and gets its Luhn digit; a 20-digit
    /// one is already whole. Listings, duplicate checks and job rows meet on this form.
    pub fn canonical(&self) -> String {
        canonical_iccid(&self.0)
    }

    /// The ICCID without its check digit, as emnify's `iccid` field reports it.
    pub fn without_check_digit(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An eUICC's EID: 32 digits whose whole value is 1 modulo 97.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid(String);

impl Eid {
    pub fn parse(value: &str, strictness: IdStrictness) -> Result<Checked<Eid>, IdError> {
        all_digits("an EID", value)?;
        if value.len() != 32 {
            return Err(IdError::Length {
                what: "an EID",
                value: value.to_string(),
                len: value.len(),
                expected: "32",
            });
        }
        let check = if mod97(value) == 1 {
            Ok(())
        } else {
            Err(IdError::Mod97 {
                value: value.to_string(),
                expected: eid_check_digits(&value[..30]),
            })
        };
        downgrade(Eid(value.to_string()), check, strictness)
    }

    pub fn from_trusted(value: String) -> Eid {
        Eid(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: IdStrictness = IdStrictness::Strict;

    #[test]
    fn emnify_docs_pair_is_luhn_complete() {
        // provider-apis.md section 4: emnify's docs print iccid / iccid_with_luhn as this pair.
        assert_eq!(luhn_check_digit("8988303000008013931"), Some(1));
        assert_eq!(luhn_complete("8988303000008013931"), "89883030000080139311");
        let checked = Iccid::parse("89883030000080139311", STRICT).unwrap();
        assert_eq!(checked.value.without_check_digit(), "8988303000008013931");
        assert!(checked.warning.is_none());
    }

    #[test]
    fn iccids_from_recorded_emnify_traffic() {
        assert_eq!(luhn_check_digit("8988303000000000129"), Some(4));
        assert_eq!(luhn_check_digit("8988303000006734768"), Some(9));
        assert!(Iccid::parse("89883030000000001294", STRICT).is_ok());
        assert!(Iccid::parse("89883030000067347689", STRICT).is_ok());
        assert!(Iccid::parse("89883030000123456789", STRICT).is_ok());
    }

    #[test]
    fn provider_doc_examples_fail_luhn_strictly_and_warn_leniently() {
        for (value, expected) in [
            ("89883070000123456789", 0u8),
            ("89310410106543789301", 5),
            ("89883030000133194051", 7),
        ] {
            let err = Iccid::parse(value, STRICT).unwrap_err();
            assert_eq!(
                err,
                IdError::Luhn {
                    value: value.into(),
                    expected
                }
            );
            let lenient = Iccid::parse(value, IdStrictness::Lenient).unwrap();
            assert_eq!(lenient.value.as_str(), value);
            assert!(lenient.warning.unwrap().is_check_digit());
        }
    }

    #[test]
    fn malformed_iccids_are_refused_even_leniently() {
        for bad in [
            "",
            "8988303000008013931X",
            "898830300000801393",
            "898830300000801393111",
            "79883030000080139311",
            " 89883030000080139311",
        ] {
            assert!(
                Iccid::parse(bad, IdStrictness::Lenient).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn eid_worked_example_from_emnify_docs() {
        let body = "890490118034556644000468325846";
        assert_eq!(eid_check_digits(body), 49);
        let eid = eid_complete(body);
        assert_eq!(eid, "89049011803455664400046832584649");
        assert!(Eid::parse(&eid, STRICT).is_ok());
    }

    #[test]
    fn eids_printed_in_docs_fail_mod97() {
        // emnify's docs example ends in 75 (mod 97 = 27).
        let err = Eid::parse("89049011803455664400046832584675", STRICT).unwrap_err();
        assert_eq!(
            err,
            IdError::Mod97 {
                value: "89049011803455664400046832584675".into(),
                expected: 49
            }
        );
        assert!(
            Eid::parse("89049011803455664400046832584675", IdStrictness::Lenient)
                .unwrap()
                .warning
                .is_some()
        );
    }

    #[test]
    fn malformed_eids_are_refused() {
        for bad in [
            "",
            "8904901180345566440004683258464",
            "8904901180345566440004683258464a",
        ] {
            assert!(Eid::parse(bad, IdStrictness::Lenient).is_err());
        }
    }

    proptest! {
        #[test]
        fn any_luhn_completed_iccid_passes(body in "89[0-9]{16,17}") {
            let iccid = luhn_complete(&body);
            prop_assert!(Iccid::parse(&iccid, STRICT).is_ok());
        }

        #[test]
        fn any_single_digit_change_breaks_luhn(body in "89[0-9]{17}", pos in 2usize..20, delta in 1u8..10) {
            let iccid = luhn_complete(&body);
            let mut bytes = iccid.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Iccid::parse(&changed, STRICT).is_err());
        }

        #[test]
        fn any_mod97_completed_eid_passes(body in "[0-9]{30}") {
            let eid = eid_complete(&body);
            prop_assert_eq!(eid.len(), 32);
            prop_assert!(Eid::parse(&eid, STRICT).is_ok());
        }

        #[test]
        fn any_single_digit_change_breaks_mod97(body in "[0-9]{30}", pos in 0usize..32, delta in 1u8..10) {
            let eid = eid_complete(&body);
            let mut bytes = eid.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Eid::parse(&changed, STRICT).is_err());
        }
    }
}
