//! The defaults more than one place needs — the command line, library callers, the engine —
//! defined once.

use std::time::Duration;

/// Where run state is kept (`--state`).
pub const STATE_DIR: &str = ".simbatch";
/// Attempts per request, the first included (`--max-attempts`).
pub const MAX_ATTEMPTS: u32 = 5;
/// How long an asynchronous change is waited for (`--wait-timeout`).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(600);
/// [`WAIT_TIMEOUT`] as the command line writes it.
pub const WAIT_TIMEOUT_TEXT: &str = "10m";
/// Rows in flight per lane at least; the rate gate, not this, sets the pace.
pub const CONCURRENCY: usize = 32;
/// Groups running at once. A group waits for each step's confirmation, so its pace is set by
/// the provider's settling time, not by requests: many groups must overlap to keep a lane busy.
/// Requests stay bounded by each lane's rate gate and in-flight cap, whatever this number.
pub const GROUPS_AT_ONCE: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_lines_wait_timeout_is_the_default() {
        assert_eq!(
            humantime::parse_duration(WAIT_TIMEOUT_TEXT).unwrap(),
            WAIT_TIMEOUT
        );
    }
}
