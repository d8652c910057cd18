//! Writes a synthetic job file of N rows covering every provider × action of SPEC 1.2, each row
//! on a different target, with identifiers shaped like the sandbox inventory. Used to measure
//! `simbatch validate` (and later `run`) at 100,000 and 1,000,000 rows.
//!
//! ```text
//! cargo run --release --example generate_job -- 100000 /tmp/job-100k.csv
//! cargo run --release --example generate_job -- 100000 /tmp/job-100k.jsonl
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;

use simbatch::job::ids::{eid_complete, luhn_complete};
use simbatch::job::model::{ActivationCode, DEFAULT_VALIDITY_PERIOD};
use simbatch::job::write::{CsvJobWriter, JsonlJobWriter};
use simbatch::job::{Action, Eid, Iccid, JobFormat, JobRow, Operation, ProviderKind, Target};

fn sim_iccid(kind: ProviderKind, i: u64) -> Iccid {
    let prefix = match kind {
        ProviderKind::Emnify => "8988303",
        ProviderKind::Twilio => "8988307",
        ProviderKind::Telnyx => "8901260",
    };
    Iccid::from_trusted(luhn_complete(&format!("{prefix}{i:012}")))
}

fn row(n: u64, kind: ProviderKind, action: Action) -> JobRow {
    let eid = || Eid::from_trusted(eid_complete(&format!("89049032{n:022}")));
    let profile = || {
        Iccid::from_trusted(luhn_complete(&format!(
            "8901260{:012}",
            900_000_000_000 + n
        )))
    };
    let validity_period = DEFAULT_VALIDITY_PERIOD;
    let operation = match action {
        Action::Activate => Operation::Activate,
        Action::Suspend => Operation::Suspend,
        Action::Standby => Operation::Standby,
        Action::Delete => Operation::Delete { report_lost: false },
        Action::EnableDevice => Operation::EnableDevice,
        Action::DisableDevice => Operation::DisableDevice,
        Action::Move => Operation::Move {
            target: match kind {
                ProviderKind::Emnify => "4242".into(),
                ProviderKind::Twilio => "HF00000000000000000000000000000002".into(),
                ProviderKind::Telnyx => "00000000-0000-4000-8000-000000000002".into(),
            },
        },
        Action::Register => Operation::Register {
            registration_code: format!("RC{:08}", n % 100_000_000),
        },
        Action::EuiccAudit => Operation::EuiccAudit { validity_period },
        Action::ProfileDownload => Operation::ProfileDownload {
            activation_code: ActivationCode::parse("1$smdp.example.com$MATCH-1").expect("valid"),
            enable: true,
            rollback: true,
            validity_period,
        },
        Action::ProfileEnable => Operation::ProfileEnable {
            profile_iccid: profile(),
            rollback: true,
            validity_period,
        },
        Action::ProfileFallback => Operation::ProfileFallback {
            profile_iccid: profile(),
            validity_period,
        },
        Action::ProfileDelete => Operation::ProfileDelete {
            profile_iccid: profile(),
            validity_period,
        },
        // The sandbox gives SIM i endpoint i.
        Action::Attach => Operation::Attach {
            target: n.to_string(),
        },
    };
    let target = match action.target_kind() {
        simbatch::job::TargetKind::Sim => Target::Sim {
            iccid: sim_iccid(kind, n),
            eid: None,
        },
        simbatch::job::TargetKind::Euicc => Target::Euicc {
            eid: eid(),
            iccid: None,
        },
    };
    JobRow {
        line: 0,
        id: format!("row-{n}"),
        provider: kind.name().to_string(),
        kind,
        target,
        operation,
        group: None,
        not_before: None,
        extra: vec![(Arc::from("ticket"), format!("INC-{}", n % 97))],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate_job ROWS OUTPUT.(csv|jsonl)";
    let rows: u64 = args.next().ok_or(usage)?.parse()?;
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let format = JobFormat::from_path(&path).ok_or(usage)?;
    let combos: Vec<(ProviderKind, Action)> = ProviderKind::ALL
        .into_iter()
        .flat_map(|k| {
            Action::ALL
                .into_iter()
                .filter(move |a| simbatch::provider::provider_of(k).supports(*a))
                .map(move |a| (k, a))
        })
        .collect();
    let out = BufWriter::new(File::create(&path)?);
    let rows_iter = (1..=rows).map(|n| {
        let (kind, action) = combos[(n as usize) % combos.len()];
        row(n, kind, action)
    });
    match format {
        JobFormat::Csv => {
            let mut writer = CsvJobWriter::new(out, vec![Arc::from("ticket")])?;
            for r in rows_iter {
                writer.write(&r)?;
            }
            writer.finish()?;
        }
        JobFormat::Jsonl => {
            let mut writer = JsonlJobWriter::new(out);
            for r in rows_iter {
                writer.write(&r)?;
            }
            writer.finish()?;
        }
    }
    eprintln!("wrote {rows} rows to {}", path.display());
    Ok(())
}
