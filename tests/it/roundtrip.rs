//! Row → job file → row round trips: any valid job row written by simbatch's writers (CSV and
//! JSONL) reads back as the same typed row, including awkward extra values.

use std::sync::Arc;

use proptest::prelude::*;
use simbatch::job::ids::{eid_complete, luhn_complete};
use simbatch::job::model::{ActivationCode, Operation};
use simbatch::job::write::{CsvJobWriter, JsonlJobWriter};
use simbatch::job::{
    Action, Eid, Iccid, JobFormat, JobReader, JobRow, ParseOptions, ProviderKind, RowResult,
    Target, TargetKind,
};

fn combos() -> Vec<(ProviderKind, Action)> {
    ProviderKind::ALL
        .into_iter()
        .flat_map(|k| {
            Action::ALL
                .into_iter()
                .filter(move |a| simbatch::provider::provider_of(k).supports(*a))
                .map(move |a| (k, a))
        })
        .collect()
}

fn iccid(body: u64) -> Iccid {
    Iccid::from_trusted(luhn_complete(&format!("8988303{body:012}")))
}

prop_compose! {
    fn operation(action: Action, kind: ProviderKind)(
        n in 0u64..1_000_000_000,
        flag_a in any::<bool>(),
        flag_b in any::<bool>(),
        validity in 1u32..=86_400,
        fleet in "[a-z][a-z0-9-]{0,20}",
        matching in "[A-Z0-9-]{1,20}",
    ) -> Operation {
        match action {
            Action::Activate => Operation::Activate,
            Action::Suspend => Operation::Suspend,
            Action::Standby => Operation::Standby,
            Action::Delete => Operation::Delete { report_lost: flag_a && kind == ProviderKind::Telnyx },
            Action::EnableDevice => Operation::EnableDevice,
            Action::DisableDevice => Operation::DisableDevice,
            Action::Move => Operation::Move { target: match kind {
                ProviderKind::Emnify => n.to_string(),
                ProviderKind::Twilio => fleet,
                ProviderKind::Telnyx => format!("{:08x}-0000-4000-8000-{:012x}", n, n),
            }},
            Action::Register => Operation::Register { registration_code: format!("RC{:08}", n % 100_000_000) },
            Action::EuiccAudit => Operation::EuiccAudit { validity_period: validity },
            Action::ProfileDownload => Operation::ProfileDownload {
                activation_code: ActivationCode::parse(&format!("1$smdp.example.com${matching}")).unwrap(),
                enable: flag_a, rollback: flag_b, validity_period: validity,
            },
            Action::ProfileEnable => Operation::ProfileEnable { profile_iccid: iccid(n), rollback: flag_a, validity_period: validity },
            Action::ProfileFallback => Operation::ProfileFallback { profile_iccid: iccid(n), validity_period: validity },
            Action::ProfileDelete => Operation::ProfileDelete { profile_iccid: iccid(n), validity_period: validity },
            Action::Attach => Operation::Attach { target: n.to_string() },
        }
    }
}

prop_compose! {
    fn job_row()(combo in prop::sample::select(combos()))(
        operation in operation(combo.1, combo.0),
        combo in Just(combo),
        sim in 0u64..1_000_000_000_000,
        with_other_id in any::<bool>(),
        id in "[A-Za-z0-9_-]{1,12}",
        group in prop::option::of("[a-z0-9]{1,8}"),
        not_before in prop::option::of(0i64..4_000_000_000),
        note in "[ -~\n\"',#]{0,30}",
    ) -> JobRow {
        let (kind, action) = combo;
        let eid = Eid::from_trusted(eid_complete(&format!("89049032{sim:022}")));
        let sim_iccid = iccid(sim);
        let target = match action.target_kind() {
            TargetKind::Sim => Target::Sim { iccid: sim_iccid, eid: with_other_id.then_some(eid) },
            TargetKind::Euicc => Target::Euicc { eid, iccid: with_other_id.then_some(sim_iccid) },
        };
        JobRow {
            line: 0,
            id,
            provider: kind.name().to_string(),
            kind,
            target,
            operation,
            group,
            not_before: not_before.map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap()),
            extra: vec![(Arc::from("note"), note)],
        }
    }
}

fn read_back(bytes: &[u8], format: JobFormat) -> Vec<JobRow> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(match format {
        JobFormat::Csv => "j.csv",
        JobFormat::Jsonl => "j.jsonl",
    });
    std::fs::write(&path, bytes).unwrap();
    JobReader::open(&path, None, ParseOptions::default())
        .unwrap()
        .map(|r| match r {
            RowResult::Valid(p) => {
                assert!(p.warnings.is_empty());
                p.row
            }
            other => panic!(
                "row did not read back: {other:?}\n{}",
                String::from_utf8_lossy(bytes)
            ),
        })
        .collect()
}

fn same_rows(written: &[JobRow], read: &[JobRow]) {
    assert_eq!(written.len(), read.len());
    for (w, r) in written.iter().zip(read) {
        let mut r = r.clone();
        r.line = 0;
        assert_eq!(w, &r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn csv_round_trip(rows in prop::collection::vec(job_row(), 1..20)) {
        let mut writer = CsvJobWriter::new(Vec::new(), vec![Arc::from("note")]).unwrap();
        for row in &rows {
            writer.write(row).unwrap();
        }
        let bytes = writer.finish().unwrap();
        same_rows(&rows, &read_back(&bytes, JobFormat::Csv));
    }

    #[test]
    fn jsonl_round_trip(rows in prop::collection::vec(job_row(), 1..20)) {
        let mut writer = JsonlJobWriter::new(Vec::new());
        for row in &rows {
            writer.write(row).unwrap();
        }
        let bytes = writer.finish().unwrap();
        same_rows(&rows, &read_back(&bytes, JobFormat::Jsonl));
    }
}

#[test]
fn line_numbers_survive_multi_line_fields() {
    let rows = vec![
        JobRow {
            line: 0,
            id: "a".into(),
            provider: "emnify".into(),
            kind: ProviderKind::Emnify,
            target: Target::Sim {
                iccid: iccid(1),
                eid: None,
            },
            operation: Operation::Suspend,
            group: None,
            not_before: None,
            extra: vec![(Arc::from("note"), "one\ntwo\nthree".into())],
        },
        JobRow {
            line: 0,
            id: "b".into(),
            provider: "emnify".into(),
            kind: ProviderKind::Emnify,
            target: Target::Sim {
                iccid: iccid(2),
                eid: None,
            },
            operation: Operation::Suspend,
            group: None,
            not_before: None,
            extra: vec![(Arc::from("note"), "x".into())],
        },
    ];
    let mut writer = CsvJobWriter::new(Vec::new(), vec![Arc::from("note")]).unwrap();
    for row in &rows {
        writer.write(row).unwrap();
    }
    let read = read_back(&writer.finish().unwrap(), JobFormat::Csv);
    assert_eq!(read[0].line, 2);
    assert_eq!(read[1].line, 5);
}
