//! The column (CSV) / key (JSONL) vocabulary of SPEC 1.1: which names simbatch knows, how a
//! header name is matched (any case, surrounding whitespace ignored), and the "did you mean"
//! rule that turns a near-miss such as `rollbak` into an error instead of a silently carried
//! extra column.

/// A column simbatch understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Action,
    Provider,
    Iccid,
    Eid,
    Id,
    Group,
    NotBefore,
    ProfileIccid,
    ActivationCode,
    Enable,
    Rollback,
    ValidityPeriod,
    Target,
    RegistrationCode,
    ReportLost,
}

impl Column {
    pub const COUNT: usize = 15;
    pub const ALL: [Column; Column::COUNT] = [
        Column::Action,
        Column::Provider,
        Column::Iccid,
        Column::Eid,
        Column::Id,
        Column::Group,
        Column::NotBefore,
        Column::ProfileIccid,
        Column::ActivationCode,
        Column::Enable,
        Column::Rollback,
        Column::ValidityPeriod,
        Column::Target,
        Column::RegistrationCode,
        Column::ReportLost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Action => "action",
            Column::Provider => "provider",
            Column::Iccid => "iccid",
            Column::Eid => "eid",
            Column::Id => "id",
            Column::Group => "group",
            Column::NotBefore => "not_before",
            Column::ProfileIccid => "profile_iccid",
            Column::ActivationCode => "activation_code",
            Column::Enable => "enable",
            Column::Rollback => "rollback",
            Column::ValidityPeriod => "validity_period",
            Column::Target => "target",
            Column::RegistrationCode => "registration_code",
            Column::ReportLost => "report_lost",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a header name was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    Known(Column),
    /// Not a known name and not close to one: carried through to the reports.
    Extra,
    /// One or two edits from a known name: an error, since a silently ignored `rollback` can
    /// leave devices offline.
    NearMiss(Column),
}

/// Matches a header name against the known columns: case-insensitive, whitespace-trimmed.
pub fn match_header(raw: &str) -> HeaderMatch {
    let name = raw.trim().to_ascii_lowercase();
    if let Some(col) = Column::ALL.into_iter().find(|c| c.name() == name) {
        return HeaderMatch::Known(col);
    }
    match closest(&name) {
        Some(col) => HeaderMatch::NearMiss(col),
        None => HeaderMatch::Extra,
    }
}

/// The known column one or two edits away from `name`, if any. Short names (`id`, `eid`)
/// allow one edit only: two edits from a three-letter word is almost any three-letter word.
fn closest(name: &str) -> Option<Column> {
    Column::ALL
        .into_iter()
        .filter_map(|col| {
            let known = col.name();
            let allowed = if known.len() <= 4 { 1 } else { 2 };
            // Separators typed differently (`not-before`, `Not Before`) count as near misses too.
            let folded = name.replace(['-', ' '], "_");
            let distance = strsim::damerau_levenshtein(&folded, known)
                .min(strsim::damerau_levenshtein(name, known));
            (distance <= allowed).then_some((distance, col))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, col)| col)
}

/// The closest of `candidates` to `value` within two edits, for "did you mean" hints on values.
pub fn suggest<'a>(value: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let value = value.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&value, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_in_any_case() {
        assert_eq!(match_header(" ICCID "), HeaderMatch::Known(Column::Iccid));
        assert_eq!(
            match_header("Not_Before"),
            HeaderMatch::Known(Column::NotBefore)
        );
        for col in Column::ALL {
            assert_eq!(match_header(col.name()), HeaderMatch::Known(col));
            assert_eq!(Column::ALL[col.index()], col);
        }
    }

    #[test]
    fn near_misses_name_the_column() {
        assert_eq!(
            match_header("rollbak"),
            HeaderMatch::NearMiss(Column::Rollback)
        );
        assert_eq!(
            match_header("activaton_code"),
            HeaderMatch::NearMiss(Column::ActivationCode)
        );
        assert_eq!(
            match_header("not-before"),
            HeaderMatch::NearMiss(Column::NotBefore)
        );
        assert_eq!(match_header("iccd"), HeaderMatch::NearMiss(Column::Iccid));
        assert_eq!(
            match_header("provder"),
            HeaderMatch::NearMiss(Column::Provider)
        );
    }

    #[test]
    fn unrelated_names_are_extra() {
        for extra in [
            "customer_ref",
            "ticket",
            "device_name",
            "note",
            "imei",
            "site",
        ] {
            assert_eq!(match_header(extra), HeaderMatch::Extra, "{extra}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("suspnd", ["activate", "suspend"]), Some("suspend"));
        assert_eq!(suggest("xyz", ["activate", "suspend"]), None);
    }
}
