//! When a run may send: `--window HH:MM-HH:MM` (a daily window in local time or `--tz`) and
//! `--until TIME`. [`Schedule::gate`] is a pure function of the clock; [`supervise`] turns it
//! into the open/closed signal the engine waits on, announces each wait and asks the run to
//! stop at the window's close or at `--until` (exit 3; the run resumes next time).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveTime, TimeZone, Utc};
use tokio::sync::watch;

use super::control::{Stop, StopReason};

/// A daily window; `end` before `start` crosses midnight (22:00-04:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: NaiveTime| {
            if t.format("%S").to_string() == "00" {
                t.format("%H:%M").to_string()
            } else {
                t.format("%H:%M:%S").to_string()
            }
        };
        write!(f, "{}-{}", show(self.start), show(self.end))
    }
}

/// Parses `HH:MM-HH:MM` (seconds, `HH:MM:SS`, are accepted too).
pub fn parse_window(text: &str) -> Result<Window, String> {
    let (start, end) = text.split_once('-').ok_or_else(|| {
        format!("`{text}` is not a window: expected HH:MM-HH:MM, e.g. 22:00-04:00")
    })?;
    let time = |t: &str| {
        let t = t.trim();
        NaiveTime::parse_from_str(t, "%H:%M:%S")
            .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
            .map_err(|_| format!("`{t}` is not a time of day: expected HH:MM (00:00 to 23:59)"))
    };
    let window = Window {
        start: time(start)?,
        end: time(end)?,
    };
    if window.start == window.end {
        return Err(format!(
            "the window `{text}` is empty: start and end are the same time"
        ));
    }
    Ok(window)
}

/// The zone a window's times are in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("local time"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`); a near miss gets a suggestion.
pub fn parse_zone(text: &str) -> Result<Zone, String> {
    text.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
        let folded = text.to_ascii_lowercase();
        let nearest = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| {
                let name = tz.name();
                (
                    strsim::damerau_levenshtein(&folded, &name.to_ascii_lowercase()),
                    name,
                )
            })
            .min();
        match nearest {
            Some((distance, name)) if distance <= 3 => {
                format!("`{text}` is not a time zone; did you mean {name}?")
            }
            _ => format!(
                "`{text}` is not a time zone: use an IANA name such as Europe/Berlin or UTC"
            ),
        }
    })
}

/// Parses `--until`: an RFC 3339 time, or a duration from now (`45m`, `2h`). A time already
/// past is refused: a run that may send nothing would only stop at once.
pub fn parse_until(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        let at = at.with_timezone(&Utc);
        if at <= now {
            return Err(format!(
                "`{text}` is already past (it is {} now): nothing could be sent; give a later time or a duration (45m, 2h)",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        return Ok(at);
    }
    match humantime::parse_duration(text) {
        Ok(d) => ChronoDuration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| format!("`{text}` is too far in the future")),
        Err(_) => Err(format!(
            "`{text}` is not a time: use RFC 3339 (2026-11-23T04:00:00+01:00) or a duration (45m, 2h)"
        )),
    }
}

/// [`parse_until`] relative to the moment the command line is read.
pub fn parse_until_from_now(text: &str) -> Result<DateTime<Utc>, String> {
    parse_until(text, Utc::now())
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Schedule {
    pub window: Option<Window>,
    pub zone: Option<Zone>,
    pub until: Option<DateTime<Utc>>,
}

/// What the schedule allows at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Sending is allowed until `closes` (`None`: for good).
    Open { closes: Option<Closing> },
    /// Sending starts at `opens`.
    Wait { opens: DateTime<Utc> },
    /// `--until` has passed, or the window will not open again before it (`opens`: when it
    /// would have).
    Over { opens: Option<DateTime<Utc>> },
}

/// When and why an open gate closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub at: DateTime<Utc>,
    pub until: bool,
}

impl Schedule {
    pub fn is_unrestricted(&self) -> bool {
        self.window.is_none() && self.until.is_none()
    }

    pub fn zone(&self) -> Zone {
        self.zone.unwrap_or(Zone::Local)
    }

    pub fn gate(&self, now: DateTime<Utc>) -> Gate {
        if self.until.is_some_and(|u| now >= u) {
            return Gate::Over { opens: None };
        }
        let by_until = self.until.map(|at| Closing { at, until: true });
        let Some(window) = self.window else {
            return Gate::Open { closes: by_until };
        };
        let intervals = match self.zone() {
            Zone::Local => intervals(&chrono::Local, window, now),
            Zone::Named(tz) => intervals(&tz, window, now),
        };
        if let Some((_, end)) = intervals.iter().find(|(s, e)| *s <= now && now < *e) {
            let closes = match by_until {
                Some(u) if u.at <= *end => u,
                _ => Closing {
                    at: *end,
                    until: false,
                },
            };
            return Gate::Open {
                closes: Some(closes),
            };
        }
        match intervals.iter().map(|(s, _)| *s).filter(|s| *s > now).min() {
            Some(opens) if self.until.is_none_or(|u| opens < u) => Gate::Wait { opens },
            opens => Gate::Over { opens },
        }
    }

    /// The window's opening time in its own zone, for messages.
    pub fn local_time(&self, at: DateTime<Utc>) -> String {
        match self.zone() {
            Zone::Local => at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
            Zone::Named(tz) => at
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string(),
        }
    }

    /// "window 22:00-04:00 (Europe/Berlin)", "--until 2026-…", or both.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(w) = self.window {
            parts.push(format!("window {w} ({})", self.zone()));
        }
        if let Some(u) = self.until {
            parts.push(format!("until {}", u.to_rfc3339()));
        }
        parts.join(", ")
    }
}

/// The window's occurrences that start yesterday, today and tomorrow (local dates), in UTC.
fn intervals<Z: TimeZone>(
    zone: &Z,
    window: Window,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let today = now.with_timezone(zone).date_naive();
    let mut out = Vec::new();
    for offset in -1..=1 {
        let Some(day) = today.checked_add_signed(ChronoDuration::days(offset)) else {
            continue;
        };
        let end_day = if window.end > window.start {
            Some(day)
        } else {
            day.succ_opt()
        };
        let (Some(start), Some(end)) = (
            instant(zone, day, window.start),
            end_day.and_then(|d| instant(zone, d, window.end)),
        ) else {
            continue;
        };
        if start < end {
            out.push((start, end));
        }
    }
    out
}

/// A wall-clock time on a date in a zone: the earlier of an ambiguous pair (clocks turned
/// back); for a time that does not exist (clocks turned forward), the first minute after it.
fn instant<Z: TimeZone>(zone: &Z, day: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = day.and_time(time);
    for shift in 0..=180 {
        let candidate = naive + ChronoDuration::minutes(shift);
        if let Some(at) = zone.from_local_datetime(&candidate).earliest() {
            return Some(at.with_timezone(&Utc));
        }
    }
    None
}

/// Keeps `open` true exactly while the schedule allows sending. Announces each wait through
/// `notice`, and requests a stop at the window's close or at `--until`.
pub async fn supervise(
    schedule: Schedule,
    open: watch::Sender<bool>,
    stop: Arc<Stop>,
    notice: impl Fn(&str),
) {
    loop {
        let now = Utc::now();
        let (next, closing) = match schedule.gate(now) {
            Gate::Open { closes: None } => {
                open.send_replace(true);
                return;
            }
            Gate::Open {
                closes: Some(closing),
            } => {
                open.send_replace(true);
                (closing.at, Some(closing))
            }
            Gate::Wait { opens } => {
                open.send_replace(false);
                notice(&format!(
                    "simbatch: outside the {}: waiting until {} ({}) before sending anything",
                    schedule.describe(),
                    opens.to_rfc3339(),
                    schedule.local_time(opens)
                ));
                (opens, None)
            }
            Gate::Over { opens } => {
                open.send_replace(false);
                if let Some(opens) = opens {
                    notice(&format!(
                        "simbatch: outside the {}: it opens next at {} ({}), after --until; nothing will be sent",
                        schedule.describe(),
                        opens.to_rfc3339(),
                        schedule.local_time(opens)
                    ));
                }
                let at = schedule.until.unwrap_or(now);
                stop.request(StopReason::Until { at });
                return;
            }
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => return,
        }
        if let Some(closing) = closing {
            // Sending ends at the close; requests in flight finish and the rest waits for the
            // next run.
            open.send_replace(false);
            stop.request(if closing.until {
                StopReason::Until { at: closing.at }
            } else {
                StopReason::WindowClosed {
                    window: schedule.describe(),
                }
            });
            return;
        }
    }
}

/// Waits until sending is allowed; false when the run stops first.
pub async fn wait_open(open: &mut watch::Receiver<bool>, stop: &Stop) -> bool {
    loop {
        if stop.requested() {
            return false;
        }
        if *open.borrow_and_update() {
            return true;
        }
        tokio::select! {
            changed = open.changed() => if changed.is_err() { return !stop.requested() && *open.borrow() },
            _ = stop.stopped() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(window: &str, tz: &str) -> Schedule {
        Schedule {
            window: Some(parse_window(window).unwrap()),
            zone: Some(parse_zone(tz).unwrap()),
            until: None,
        }
    }

    #[test]
    fn windows_parse_and_refuse_nonsense() {
        let w = parse_window("22:00-04:00").unwrap();
        assert_eq!(w.to_string(), "22:00-04:00");
        assert_eq!(
            parse_window("01:02:03-04:05").unwrap().to_string(),
            "01:02:03-04:05"
        );
        for bad in ["22:00", "25:00-04:00", "10:00-10:00", "ab-cd", ""] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert!(parse_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn a_window_within_one_day() {
        let s = schedule("09:00-17:00", "UTC");
        assert_eq!(
            s.gate(utc("2026-11-22T08:00:00Z")),
            Gate::Wait {
                opens: utc("2026-11-22T09:00:00Z")
            }
        );
        assert_eq!(
            s.gate(utc("2026-11-22T12:00:00Z")),
            Gate::Open {
                closes: Some(Closing {
                    at: utc("2026-11-22T17:00:00Z"),
                    until: false
                })
            }
        );
        assert_eq!(
            s.gate(utc("2026-11-22T17:00:00Z")),
            Gate::Wait {
                opens: utc("2026-11-23T09:00:00Z")
            }
        );
    }

    #[test]
    fn a_window_across_midnight_in_a_named_zone() {
        // Berlin is UTC+1 in November.
        let s = schedule("22:00-04:00", "Europe/Berlin");
        assert_eq!(
            s.gate(utc("2026-11-22T22:30:00Z")),
            Gate::Open {
                closes: Some(Closing {
                    at: utc("2026-11-23T03:00:00Z"),
                    until: false
                })
            }
        );
        assert_eq!(
            s.gate(utc("2026-11-22T02:00:00Z")),
            Gate::Open {
                closes: Some(Closing {
                    at: utc("2026-11-22T03:00:00Z"),
                    until: false
                })
            }
        );
        assert_eq!(
            s.gate(utc("2026-11-22T12:00:00Z")),
            Gate::Wait {
                opens: utc("2026-11-22T21:00:00Z")
            }
        );
    }

    #[test]
    fn daylight_saving_changes_move_the_window_with_the_wall_clock() {
        // 2026-03-29: Berlin goes from UTC+1 to UTC+2 at 02:00 local; 02:30 does not exist.
        let s = schedule("02:30-05:00", "Europe/Berlin");
        assert_eq!(
            s.gate(utc("2026-03-28T23:00:00Z")),
            Gate::Wait {
                opens: utc("2026-03-29T01:00:00Z") // 03:00 CEST, the first minute that exists
            }
        );
    }

    #[test]
    fn until_closes_early_and_ends_the_run() {
        let mut s = schedule("09:00-17:00", "UTC");
        s.until = Some(utc("2026-11-22T10:00:00Z"));
        assert_eq!(
            s.gate(utc("2026-11-22T09:30:00Z")),
            Gate::Open {
                closes: Some(Closing {
                    at: utc("2026-11-22T10:00:00Z"),
                    until: true
                })
            }
        );
        assert_eq!(
            s.gate(utc("2026-11-22T10:00:00Z")),
            Gate::Over { opens: None }
        );
        // The window would only open after --until: nothing to wait for.
        s.until = Some(utc("2026-11-22T08:30:00Z"));
        assert_eq!(
            s.gate(utc("2026-11-22T08:00:00Z")),
            Gate::Over {
                opens: Some(utc("2026-11-22T09:00:00Z"))
            }
        );
        let only_until = Schedule {
            until: Some(utc("2026-11-22T10:00:00Z")),
            ..Schedule::default()
        };
        assert!(matches!(
            only_until.gate(utc("2026-11-22T09:00:00Z")),
            Gate::Open {
                closes: Some(Closing { until: true, .. })
            }
        ));
    }

    #[test]
    fn until_accepts_rfc3339_and_durations() {
        let now = utc("2026-11-22T09:00:00Z");
        assert_eq!(
            parse_until("2026-11-22T11:00:00+01:00", now).unwrap(),
            utc("2026-11-22T10:00:00Z")
        );
        assert_eq!(
            parse_until("45m", now).unwrap(),
            utc("2026-11-22T09:45:00Z")
        );
        assert!(parse_until("tomorrow-ish", now).is_err());
        let past = parse_until("2026-11-22T08:59:59Z", now).unwrap_err();
        assert!(past.contains("already past"), "{past}");
    }

    #[test]
    fn a_mistyped_zone_gets_a_suggestion() {
        let e = parse_zone("Europe/Berln").unwrap_err();
        assert!(e.contains("did you mean Europe/Berlin?"), "{e}");
        let e = parse_zone("nowhere at all").unwrap_err();
        assert!(e.contains("use an IANA name"), "{e}");
    }
}
