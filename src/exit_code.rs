//! The documented exit codes of SPEC 5, in one place.

/// What the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every row succeeded or was skipped (or: the files are valid).
    Success = 0,
    /// Finished; some rows failed, are unknown or blocked.
    RowsFailed = 1,
    /// Usage, configuration or job-file error; nothing was sent.
    Usage = 2,
    /// Aborted (auth failure, failure threshold, interrupted, `--until` reached); resumable.
    Aborted = 3,
    /// The state store is busy (another process) or unreadable.
    StateStore = 4,
    /// Dispatch finished; some rows still await confirmation.
    Pending = 5,
    /// The changes finished but the reports could not be written (disk full, permissions);
    /// `simbatch report RUN` writes them from the state store.
    ReportsUnwritten = 6,
}

impl ExitCode {
    /// The exit code of a command that failed with `err`: a state-store problem is 4 whichever
    /// command met it, reports that could not be written 6; anything else that stops a command
    /// before it starts is a usage error.
    pub fn for_error(err: &anyhow::Error) -> ExitCode {
        if err.chain().any(|c| {
            matches!(
                c.downcast_ref::<crate::report::ReportError>(),
                Some(crate::report::ReportError::Io { .. })
            )
        }) {
            return ExitCode::ReportsUnwritten;
        }
        let store = err.chain().any(|c| {
            c.downcast_ref::<crate::store::StoreError>().is_some()
                || matches!(
                    c.downcast_ref::<crate::report::ReportError>(),
                    Some(crate::report::ReportError::Store(_))
                )
        });
        if store {
            ExitCode::StateStore
        } else {
            ExitCode::Usage
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
