//! A problem found in a job file, addressed as `FILE:LINE: message` (SPEC 1.4), and the capped
//! collection of them that `validate` and `run` print.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding. `line` is `None` for problems with the file as a whole (empty, unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: Option<u64>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(line: impl Into<Option<u64>>, message: impl Into<String>) -> Self {
        Diagnostic {
            line: line.into(),
            severity: Severity::Error,
            message: printable(message.into()),
        }
    }

    pub fn warning(line: impl Into<Option<u64>>, message: impl Into<String>) -> Self {
        Diagnostic {
            line: line.into(),
            severity: Severity::Warning,
            message: printable(message.into()),
        }
    }

    /// Renders as `FILE:LINE: message` (`FILE:LINE: warning: message` for warnings).
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayWithFile { file, diag: self }
    }
}

/// The message with control characters escaped (`\u{1b}`): values quoted from a hostile job
/// file must not drive the operator's terminal (escape sequences, bells, NULs).
fn printable(message: String) -> String {
    if !message.chars().any(char::is_control) {
        return message;
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

struct DisplayWithFile<'a> {
    file: &'a str,
    diag: &'a Diagnostic,
}

impl fmt::Display for DisplayWithFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file)?;
        if let Some(line) = self.diag.line {
            write!(f, ":{line}")?;
        }
        if self.diag.severity == Severity::Warning {
            f.write_str(": warning")?;
        }
        write!(f, ": {}", self.diag.message)
    }
}

/// Diagnostics kept up to a cap per severity, with a count of all of them, so that a file with a
/// million bad rows costs bounded memory and prints a readable report.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    cap: usize,
    kept: Vec<Diagnostic>,
    errors: u64,
    warnings: u64,
}

/// How many diagnostics of each severity are kept for printing.
pub const DEFAULT_DIAGNOSTIC_CAP: usize = 100;

impl Diagnostics {
    pub fn with_cap(cap: usize) -> Self {
        Diagnostics {
            cap,
            ..Default::default()
        }
    }

    pub fn push(&mut self, diag: Diagnostic) {
        let count = match diag.severity {
            Severity::Error => &mut self.errors,
            Severity::Warning => &mut self.warnings,
        };
        *count += 1;
        if *count as usize <= self.cap {
            self.kept.push(diag);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors
    }

    pub fn warning_count(&self) -> u64 {
        self.warnings
    }

    /// The kept diagnostics in line order (file-level ones first), errors before warnings on a line.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut out: Vec<&Diagnostic> = self.kept.iter().collect();
        out.sort_by_key(|d| (d.line, d.severity));
        out
    }

    /// How many of each severity were counted but not kept.
    pub fn omitted(&self) -> (u64, u64) {
        let cap = self.cap as u64;
        (
            self.errors.saturating_sub(cap),
            self.warnings.saturating_sub(cap),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_in_messages_are_escaped() {
        let d = super::Diagnostic::error(2, "unknown action `\u{1b}]0;x\u{7}sus\0pend`");
        assert_eq!(d.message, "unknown action `\\u{1b}]0;x\\u{7}sus\\u{0}pend`");
        assert_eq!(super::Diagnostic::warning(1, "plain").message, "plain");
    }

    use super::*;

    #[test]
    fn renders_file_line_message() {
        let d = Diagnostic::error(7, "bad thing");
        assert_eq!(
            d.display("jobs/a.csv").to_string(),
            "jobs/a.csv:7: bad thing"
        );
        let w = Diagnostic::warning(3, "odd thing");
        assert_eq!(
            w.display("a.csv").to_string(),
            "a.csv:3: warning: odd thing"
        );
        let f = Diagnostic::error(None, "empty file");
        assert_eq!(f.display("a.csv").to_string(), "a.csv: empty file");
    }

    #[test]
    fn caps_but_counts() {
        let mut ds = Diagnostics::with_cap(2);
        for line in (1..=5).rev() {
            ds.push(Diagnostic::error(line, "x"));
        }
        ds.push(Diagnostic::warning(9, "w"));
        assert_eq!(ds.error_count(), 5);
        assert_eq!(ds.warning_count(), 1);
        assert_eq!(ds.omitted(), (3, 0));
        let lines: Vec<_> = ds.sorted().iter().map(|d| d.line).collect();
        assert_eq!(lines, [Some(4), Some(5), Some(9)]);
    }
}
