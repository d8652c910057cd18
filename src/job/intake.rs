//! Taking a job in for a run (SPEC 3.3): the file is read **once**, and that one pass validates
//! it, hashes it and writes the private copy the run then executes and reports from. Nothing
//! after this reads the path again, so a file replaced or edited during a run (during a
//! `--window` wait, or in the milliseconds before the lanes start) cannot put unvalidated rows
//! into it; and a source that can be read only once (standard input, a pipe) or never ends
//! (`/dev/zero`) is read once, as far as validation goes.
//!
//! [`hash_file`] is the other way in: a regular file's SHA-256 alone, to recognise the resume
//! of a run made from the same bytes (whose stored copy is then used instead).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::parse::ParseOptions;
use super::source::JobFormat;
use super::validate::{validate_read, FileValidation};

/// A private copy of a job's bytes and their SHA-256 (hex).
pub struct JobCopy {
    file: tempfile::NamedTempFile,
    pub sha256: String,
}

impl JobCopy {
    /// Where the copy is until it is persisted.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Moves the copy to `dest` (replacing what is there), readable by its owner only.
    pub fn persist(self, dest: &Path) -> io::Result<()> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match self.file.persist(dest) {
            Ok(_) => Ok(()),
            // Another filesystem: copy it over, then let the temporary file go.
            Err(e) => {
                let partial = dest.with_extension("partial");
                std::fs::copy(e.file.path(), &partial)?;
                std::fs::rename(&partial, dest)
            }
        }
    }
}

/// What the pass has seen so far, shared between the reader that validation pulls from and
/// the caller that keeps the copy.
struct Intake {
    copy: File,
    hasher: Sha256,
    at_end: bool,
    failed: Option<io::Error>,
}

/// Reads the source, writing every byte read into the copy and the hash.
struct Tee {
    source: File,
    intake: Arc<Mutex<Intake>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read(buf)?;
        let mut intake = self.intake.lock().expect("intake lock");
        if n == 0 {
            intake.at_end = true;
        } else if intake.failed.is_none() {
            intake.hasher.update(&buf[..n]);
            if let Err(e) = intake.copy.write_all(&buf[..n]) {
                intake.failed = Some(e);
            }
        }
        Ok(n)
    }
}

/// Validates `path` in one pass that also copies its bytes to a private temporary file in
/// `dir` and hashes them. The copy is returned when the whole file was read (validation did
/// not stop early on a fatal problem); the validation names `path`.
pub fn validate_and_copy(
    path: &Path,
    format: Option<JobFormat>,
    options: &ParseOptions,
    dir: &Path,
) -> (FileValidation, Option<JobCopy>) {
    let refused = |message: String| FileValidation::refused(path, message);
    let source = match File::open(path) {
        Ok(f) => f,
        Err(e) => return (refused(format!("cannot open the job file: {e}")), None),
    };
    let file = match tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(dir)
    {
        Ok(f) => f,
        Err(e) => {
            return (
                refused(format!(
                    "cannot make the run's copy of the job in {}: {e}",
                    dir.display()
                )),
                None,
            )
        }
    };
    let copy = match file.reopen() {
        Ok(c) => c,
        Err(e) => {
            return (
                refused(format!("cannot make the run's copy of the job: {e}")),
                None,
            )
        }
    };
    let intake = Arc::new(Mutex::new(Intake {
        copy,
        hasher: Sha256::new(),
        at_end: false,
        failed: None,
    }));
    let tee = Tee {
        source,
        intake: intake.clone(),
    };
    let mut validation = validate_read(tee, path, format, options);
    let mut intake = intake.lock().expect("intake lock");
    let written = match intake.failed.take() {
        Some(e) => Err(e),
        None => intake.copy.flush(),
    };
    if let Err(e) = written {
        validation.diagnostics.push(crate::job::Diagnostic::error(
            None,
            format!("cannot write the run's copy of the job: {e}"),
        ));
        validation.unreadable = true;
        return (validation, None);
    }
    if validation.unreadable || !intake.at_end {
        return (validation, None);
    }
    let sha256 = hex(&std::mem::take(&mut intake.hasher).finalize());
    (validation, Some(JobCopy { file, sha256 }))
}

/// The SHA-256 (hex) of a regular file's bytes; `None` for anything else (a device, a pipe,
/// standard input: those are read once, by [`validate_and_copy`]) or when it cannot be read.
pub fn hash_file(path: &Path) -> Option<String> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).ok()?;
    Some(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the copy is made: in the state directory when it exists (so that it is moved into
/// place, not copied), else in the system's temporary directory.
pub fn copy_dir(state: &Path) -> PathBuf {
    if state.is_dir() {
        state.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_holds_exactly_the_bytes_validated_and_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.csv");
        let text = "action,provider,iccid\nsuspend,emnify,89883030000000000015\n";
        std::fs::write(&job, text).unwrap();
        let (validation, copy) =
            validate_and_copy(&job, None, &ParseOptions::default(), dir.path());
        assert!(validation.is_valid(), "{:?}", validation.diagnostics);
        assert_eq!(validation.path, job.display().to_string());
        let copy = copy.expect("read to its end");
        assert_eq!(std::fs::read_to_string(copy.path()).unwrap(), text);
        assert_eq!(Some(copy.sha256.clone()), hash_file(&job));
        let dest = dir.path().join("jobs/run.csv");
        copy.persist(&dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), text);
    }

    #[test]
    fn a_file_refused_early_gives_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.csv");
        std::fs::write(&job, vec![b'x'; 3 << 20]).unwrap();
        let (validation, copy) =
            validate_and_copy(&job, None, &ParseOptions::default(), dir.path());
        assert!(validation.unreadable);
        assert!(copy.is_none());
        let (validation, copy) = validate_and_copy(
            &dir.path().join("missing.csv"),
            None,
            &ParseOptions::default(),
            dir.path(),
        );
        assert!(validation.unreadable && copy.is_none());
        assert!(hash_file(Path::new("/dev/zero")).is_none());
    }
}
