//! Micro-benchmarks: job-file parsing throughput (rows/s, CSV and JSONL) and identifier checks.
//! Run with `cargo bench --bench micro`; CI only builds them (`cargo bench --no-run`).

use std::io::Write;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use simbatch::job::ids::{eid_complete, luhn_complete};
use simbatch::job::write::{CsvJobWriter, JsonlJobWriter};
use simbatch::job::{
    validate_file, Eid, Iccid, IdStrictness, JobFormat, JobRow, Operation, ParseOptions,
    ProviderKind, Target,
};

const ROWS: u64 = 20_000;

fn rows() -> impl Iterator<Item = JobRow> {
    (1..=ROWS).map(|i| JobRow {
        line: 0,
        id: i.to_string(),
        provider: "emnify".into(),
        kind: ProviderKind::Emnify,
        target: Target::Sim {
            iccid: Iccid::from_trusted(luhn_complete(&format!("8988303{i:012}"))),
            eid: None,
        },
        operation: if i % 2 == 0 {
            Operation::Suspend
        } else {
            Operation::Activate
        },
        group: None,
        not_before: None,
        extra: vec![(Arc::from("ticket"), format!("INC-{i}"))],
    })
}

fn write_job(dir: &std::path::Path, format: JobFormat) -> std::path::PathBuf {
    let path = dir.join(match format {
        JobFormat::Csv => "bench.csv",
        JobFormat::Jsonl => "bench.jsonl",
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    match format {
        JobFormat::Csv => {
            let mut w = CsvJobWriter::new(&mut file, vec![Arc::from("ticket")]).unwrap();
            rows().for_each(|r| w.write(&r).unwrap());
            w.finish().unwrap();
        }
        JobFormat::Jsonl => {
            let mut w = JsonlJobWriter::new(&mut file);
            rows().for_each(|r| w.write(&r).unwrap());
            w.finish().unwrap();
        }
    }
    file.flush().unwrap();
    path
}

fn parsing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let options = ParseOptions::default();
    let mut group = c.benchmark_group("validate_file");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(20);
    for format in [JobFormat::Csv, JobFormat::Jsonl] {
        let path = write_job(dir.path(), format);
        group.bench_function(format!("{format:?}"), |b| {
            b.iter(|| {
                let v = validate_file(&path, None, &options);
                assert_eq!(v.valid_rows, ROWS);
            })
        });
    }
    group.finish();
}

fn id_checks(c: &mut Criterion) {
    let iccid = luhn_complete("8988303000008013931");
    let eid = eid_complete("890490118034556644000468325846");
    c.bench_function("iccid_parse", |b| {
        b.iter(|| Iccid::parse(std::hint::black_box(&iccid), IdStrictness::Strict))
    });
    c.bench_function("eid_parse", |b| {
        b.iter(|| Eid::parse(std::hint::black_box(&eid), IdStrictness::Strict))
    });
}

fn checkpoint_commits(c: &mut Criterion) {
    use simbatch::store::{CheckpointStore, RowRecord, SledStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let run = store.run("bench").unwrap();
    let mut group = c.benchmark_group("checkpoint_commit");
    for batch in [1u64, 100] {
        group.throughput(Throughput::Elements(batch));
        let mut next = 0u64;
        group.bench_function(format!("batch_of_{batch}"), |b| {
            b.iter(|| {
                let rows: Vec<(u64, RowRecord)> = (0..batch)
                    .map(|i| (next + i, RowRecord::sending(chrono::Utc::now(), 1)))
                    .collect();
                next += batch;
                run.commit(&rows).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parsing, id_checks, checkpoint_commits);
criterion_main!(benches);
