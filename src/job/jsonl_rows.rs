//! Streaming JSONL job reader: one JSON object per line, keys matched like CSV header names
//! (any case). Blank lines and lines starting with `#` are skipped. String, number and boolean
//! values are accepted for known keys; nested values are carried as JSON text in extra keys.
//!
//! A line is read as its top-level entries in order, repeats kept ([`Line`]): a JSON map keeps
//! the last of a repeated key, so `"iccid":A, …, "iccid":B` would silently change B. A key
//! named twice is an error naming the line.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::columns::{match_header, Column, HeaderMatch};
use super::source::{io_problem, RawRow, ReadProblem};

/// The rows of a JSONL job file.
pub struct JsonlRows<R: BufRead> {
    input: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    /// Near-miss keys already reported: reported once, at their first line, not on every row.
    reported_near_misses: HashSet<String>,
    /// Key → match, since every line repeats the same keys and fuzzy matching is not free.
    /// Bounded so that a file with a new key on every line cannot grow it without limit.
    key_cache: HashMap<String, HeaderMatch>,
}

const KEY_CACHE_LIMIT: usize = 1024;

impl<R: BufRead> JsonlRows<R> {
    pub fn new(input: R) -> Self {
        JsonlRows {
            input,
            line: 0,
            buf: Vec::with_capacity(512),
            done: false,
            reported_near_misses: HashSet::new(),
            key_cache: HashMap::new(),
        }
    }

    fn convert(&mut self) -> Result<Option<RawRow>, ReadProblem> {
        let line = self.line;
        let Some(object) = parse_line(line, &self.buf)? else {
            return Ok(None);
        };
        let mut row = RawRow {
            line,
            ..RawRow::default()
        };
        let mut seen = HashSet::new();
        for (key, value) in object {
            match self.match_key(&key) {
                HeaderMatch::Known(col) => {
                    if !seen.insert(col) {
                        return Err(ReadProblem::row(
                            line,
                            format!(
                                "key `{}` appears more than once (in different case)",
                                col.name()
                            ),
                        ));
                    }
                    row.values[col.index()] = known_value(line, col, value)?;
                }
                HeaderMatch::NearMiss(col) => return Err(self.near_miss(line, &key, col)),
                HeaderMatch::Extra => {
                    let text = match value {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    row.extra.push((Arc::from(key.as_str()), text));
                }
            }
        }
        Ok(Some(row))
    }

    /// The column a key names, from the cache when this key was seen before.
    fn match_key(&mut self, key: &str) -> HeaderMatch {
        if let Some(m) = self.key_cache.get(key) {
            return m.clone();
        }
        let m = match_header(key);
        if self.key_cache.len() < KEY_CACHE_LIMIT {
            self.key_cache.insert(key.to_string(), m.clone());
        }
        m
    }

    /// A key close to a known column: the suggestion is given once, at its first line.
    fn near_miss(&mut self, line: u64, key: &str, col: Column) -> ReadProblem {
        if self.reported_near_misses.insert(key.to_string()) {
            return ReadProblem::row(
                line,
                format!(
                    "unknown key `{key}`: did you mean `{}`? (rename it, or it would be ignored)",
                    col.name()
                ),
            );
        }
        ReadProblem::row(
            line,
            format!("unknown key `{key}` (see the first line that has it)"),
        )
    }
}

/// One line's entries, or `None` for a blank or comment line. Errors name the line.
fn parse_line(line: u64, buf: &[u8]) -> Result<Option<Vec<(String, Value)>>, ReadProblem> {
    let mut bytes = buf;
    while let Some((last, rest)) = bytes.split_last() {
        if matches!(last, b'\n' | b'\r') {
            bytes = rest;
        } else {
            break;
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ReadProblem::row(
            line,
            format!(
                "line is not valid UTF-8 (at byte {}); save the file as UTF-8",
                e.valid_up_to() + 1
            ),
        )
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let object = match serde_json::from_str::<Line>(trimmed) {
        Ok(Line::Object(entries)) => entries,
        Ok(Line::Other(kind)) => {
            return Err(ReadProblem::row(
                line,
                format!("expected a JSON object per line, found {kind}"),
            ))
        }
        Err(e) => return Err(ReadProblem::row(line, format!("not valid JSON: {e}"))),
    };
    if let Some(key) = repeated_key(&object) {
        return Err(ReadProblem::row(
            line,
            format!(
                "key `{key}` appears more than once in this object; which value is meant? (a JSON reader would silently take the last)"
            ),
        ));
    }
    Ok(Some(object))
}

/// A known column's value as text: strings trimmed, numbers and booleans written out, empty
/// and null as absent; arrays and objects are refused.
fn known_value(line: u64, col: Column, value: Value) -> Result<Option<String>, ReadProblem> {
    let text = match value {
        Value::Null => None,
        Value::String(s) => Some(s.trim().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // 19 or 20 digits do not fit a JSON reader's number: refuse rather than use a rounded
        // value.
        Value::Number(n) if matches!(col, Column::Iccid | Column::Eid | Column::ProfileIccid) => {
            return Err(ReadProblem::row(
                line,
                format!(
                    "`{}` is a number ({n}): write ICCIDs and EIDs as strings (\"{}\": \"8988…\"), since a JSON number cannot hold all their digits",
                    col.name(),
                    col.name()
                ),
            ))
        }
        Value::Number(n) => Some(n.to_string()),
        other => {
            return Err(ReadProblem::row(
                line,
                format!(
                    "`{}` must be a string, number or boolean, found {}",
                    col.name(),
                    json_kind(&other)
                ),
            ))
        }
    };
    Ok(text.filter(|s| !s.is_empty()))
}

/// One JSONL line: its top-level entries in order (repeats kept), or what else it is.
enum Line {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Line, D::Error> {
        deserializer.deserialize_any(LineVisitor)
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(Line::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Line, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Line::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Line, E> {
        Ok(Line::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Line, E> {
        Ok(Line::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Line, E> {
        Ok(Line::Other("null"))
    }
}

/// The first key that an object names more than once, exactly.
fn repeated_key(entries: &[(String, Value)]) -> Option<&str> {
    let mut seen = HashSet::with_capacity(entries.len());
    entries
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(*k))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<R: BufRead> Iterator for JsonlRows<R> {
    type Item = Result<RawRow, ReadProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    match self.convert() {
                        Ok(None) => continue,
                        Ok(Some(row)) => return Some(Ok(row)),
                        Err(problem) => return Some(Err(problem)),
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(io_problem(&e)));
                }
            }
            if self.buf.capacity() > 64 * 1024 {
                self.buf = Vec::with_capacity(512); // do not keep one huge line's buffer around
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::columns::Column;

    #[test]
    fn objects_blank_lines_and_types() {
        let input = "{\"Action\":\"suspend\",\"iccid\":\"89883030000080139311\",\"ticket\":42}\r\n\n# c\n{\"action\":\"profile-download\",\"enable\":true,\"validity_period\":60,\"meta\":{\"a\":1}}\n";
        let rows: Vec<RawRow> = JsonlRows::new(input.as_bytes())
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 1);
        assert_eq!(rows[0].get(Column::Action), Some("suspend"));
        assert_eq!(rows[0].extra, vec![(Arc::from("ticket"), "42".to_string())]);
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].get(Column::Enable), Some("true"));
        assert_eq!(rows[1].get(Column::ValidityPeriod), Some("60"));
        assert_eq!(rows[1].extra[0].1, "{\"a\":1}");
    }

    #[test]
    fn row_errors() {
        let input =
            "[1,2]\n{not json}\n{\"action\":[1]}\n{\"rollbak\":true}\n{\"rollbak\":false}\n";
        let results: Vec<_> = JsonlRows::new(input.as_bytes()).collect();
        let messages: Vec<String> = results
            .into_iter()
            .map(|r| r.unwrap_err().diagnostic.message)
            .collect();
        assert!(messages[0].contains("found an array"));
        assert!(messages[1].contains("not valid JSON"));
        assert!(messages[2].contains("must be a string"));
        assert!(messages[3].contains("did you mean `rollback`"));
        assert!(messages[4].contains("see the first line"));
    }

    #[test]
    fn a_key_named_twice_is_refused_not_last_wins() {
        let input =
            "{\"action\":\"suspend\",\"iccid\":\"1\",\"iccid\":\"2\"}\n{\"note\":1,\"note\":2}\n";
        let messages: Vec<String> = JsonlRows::new(input.as_bytes())
            .map(|r| r.unwrap_err().diagnostic.message)
            .collect();
        assert!(
            messages[0].contains("key `iccid` appears more than once"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("key `note` appears more than once"),
            "{messages:?}"
        );
    }
}
