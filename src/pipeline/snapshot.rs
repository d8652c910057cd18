//! The inventory a lane lists before dispatch (instead of reading each row's SIM), kept in
//! anonymous temporary files rather than in memory, so that a run's memory does not grow with
//! the inventory: 1,000,000 listed SIMs cost about 60 MB of disk and a few kilobytes of heap.
//!
//! Layout: a data file of appended records (the ICCID and the encoded [`SimState`]) and an
//! index file of fixed 16-byte slots (`hash of the ICCID`, `offset of the record`), open
//! addressing with linear probing, at most half full (it doubles when it would be fuller).
//! Each entry is taken once: the slot then holds [`TAKEN`] and the next lookup of that SIM is
//! answered "read it live", as the snapshot is stale once the job itself has acted on it.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use crate::provider::SimState;

const SLOT_BYTES: u64 = 16;
/// An unused slot (a hash is never 0: see [`key_hash`]).
const EMPTY: u64 = 0;
/// The offset of an entry already taken.
const TAKEN: u64 = u64::MAX;
/// A string field that is absent.
const NONE_LEN: u16 = u16::MAX;

/// What the listing says about a SIM, asked once.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// Listed, with this state.
    Listed(SimState),
    /// Not in the listing: the provider does not have it.
    NotListed,
    /// Asked before: read it live.
    AlreadyTaken,
    /// Not listed so far, and the listing is still running: ask again after the next page.
    NotYet,
}

/// The listed inventory of one lane.
pub struct Snapshot {
    index: File,
    data: BufWriter<File>,
    /// Bytes appended to `data` so far (the next record's offset).
    data_len: u64,
    slots: u64,
    entries: u64,
}

/// A 16-byte index slot: (hash of the key, offset of the record).
fn decode_slot(b: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
    )
}

fn key_hash(key: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish().max(1)
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let bytes = &s.as_bytes()[..s.len().min(NONE_LEN as usize - 1)];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&NONE_LEN.to_le_bytes()),
    }
}

fn take_str(bytes: &[u8], at: &mut usize) -> io::Result<Option<String>> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "snapshot record cut short");
    let len = bytes.get(*at..*at + 2).ok_or_else(corrupt)?;
    let len = u16::from_le_bytes([len[0], len[1]]);
    *at += 2;
    if len == NONE_LEN {
        return Ok(None);
    }
    let s = bytes.get(*at..*at + len as usize).ok_or_else(corrupt)?;
    *at += len as usize;
    Ok(Some(String::from_utf8_lossy(s).into_owned()))
}

/// `key`, then the state: id, status, settled, group, device id + status, eid.
fn encode(key: &str, state: &SimState) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(&[0; 4]); // record length, filled in below
    put_str(&mut out, Some(key));
    put_str(&mut out, Some(&state.id));
    put_str(&mut out, Some(&state.status));
    out.push(state.settled as u8);
    put_str(&mut out, state.group.as_deref());
    put_str(&mut out, state.device.as_ref().map(|d| d.0.as_str()));
    put_str(&mut out, state.device.as_ref().map(|d| d.1.as_str()));
    put_str(&mut out, state.eid.as_deref());
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> io::Result<(String, SimState)> {
    let mut at = 0;
    let missing = || io::Error::new(io::ErrorKind::InvalidData, "snapshot record lacks a field");
    let key = take_str(bytes, &mut at)?.ok_or_else(missing)?;
    let id = take_str(bytes, &mut at)?.ok_or_else(missing)?;
    let status = take_str(bytes, &mut at)?.ok_or_else(missing)?;
    let settled = *bytes.get(at).ok_or_else(missing)? != 0;
    at += 1;
    let group = take_str(bytes, &mut at)?;
    let device_id = take_str(bytes, &mut at)?;
    let device_status = take_str(bytes, &mut at)?;
    let eid = take_str(bytes, &mut at)?;
    Ok((
        key,
        SimState {
            id,
            status,
            settled,
            group,
            device: device_id.zip(device_status),
            eid,
        },
    ))
}

impl Snapshot {
    /// An empty snapshot sized for about `expected` SIMs (it grows past that as needed).
    pub fn new(expected: u64) -> io::Result<Snapshot> {
        let slots = (expected.max(512) * 2).next_power_of_two();
        let index = tempfile::tempfile()?;
        index.set_len(slots * SLOT_BYTES)?;
        Ok(Snapshot {
            index,
            data: BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?),
            data_len: 0,
            slots,
            entries: 0,
        })
    }

    /// SIMs listed so far.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.entries
    }

    fn slot(&self, i: u64) -> io::Result<(u64, u64)> {
        Self::read_slot(&self.index, i)
    }

    fn read_slot(index: &File, i: u64) -> io::Result<(u64, u64)> {
        let mut b = [0u8; SLOT_BYTES as usize];
        index.read_exact_at(&mut b, i * SLOT_BYTES)?;
        Ok(decode_slot(&b))
    }

    fn set_slot(index: &File, i: u64, hash: u64, offset: u64) -> io::Result<()> {
        let mut b = [0u8; SLOT_BYTES as usize];
        b[..8].copy_from_slice(&hash.to_le_bytes());
        b[8..].copy_from_slice(&offset.to_le_bytes());
        index.write_all_at(&b, i * SLOT_BYTES)
    }

    /// Adds one listed SIM (a SIM listed twice, as paging may do while the inventory changes,
    /// keeps its first state: both are stale by the time the row runs, and the row's change
    /// re-checks what it must).
    pub fn insert(&mut self, key: &str, state: &SimState) -> io::Result<()> {
        if (self.entries + 1) * 2 > self.slots {
            self.grow()?;
        }
        let hash = key_hash(key);
        let mut i = hash & (self.slots - 1);
        loop {
            let (h, offset) = self.slot(i)?;
            if h == EMPTY {
                break;
            }
            if h == hash && offset != TAKEN && self.key_at(offset)? == key {
                return Ok(());
            }
            i = (i + 1) & (self.slots - 1);
        }
        let record = encode(key, state);
        Self::set_slot(&self.index, i, hash, self.data_len)?;
        self.data.write_all(&record)?;
        self.data_len += record.len() as u64;
        self.entries += 1;
        Ok(())
    }

    /// Doubles the index, re-placing every slot (records stay where they are).
    fn grow(&mut self) -> io::Result<()> {
        let slots = self.slots * 2;
        let index = tempfile::tempfile()?;
        index.set_len(slots * SLOT_BYTES)?;
        // The old index is read a block at a time: growing must not cost the memory the
        // files save.
        const BLOCK_SLOTS: u64 = 4096;
        let mut block = vec![0u8; (BLOCK_SLOTS * SLOT_BYTES) as usize];
        for first in (0..self.slots).step_by(BLOCK_SLOTS as usize) {
            let count = BLOCK_SLOTS.min(self.slots - first);
            let block = &mut block[..(count * SLOT_BYTES) as usize];
            self.index.read_exact_at(block, first * SLOT_BYTES)?;
            for slot in block.chunks_exact(SLOT_BYTES as usize) {
                let (hash, offset) = decode_slot(slot);
                if hash == EMPTY {
                    continue;
                }
                let mut i = hash & (slots - 1);
                while Self::read_slot(&index, i)?.0 != EMPTY {
                    i = (i + 1) & (slots - 1);
                }
                Self::set_slot(&index, i, hash, offset)?;
            }
        }
        self.index = index;
        self.slots = slots;
        Ok(())
    }

    fn record_at(&self, offset: u64) -> io::Result<Vec<u8>> {
        let file = self.data.get_ref();
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, offset)?;
        let mut record = vec![0u8; u32::from_le_bytes(len) as usize];
        file.read_exact_at(&mut record, offset + 4)?;
        Ok(record)
    }

    fn key_at(&self, offset: u64) -> io::Result<String> {
        if offset >= self.data_len - self.data.buffer().len() as u64 {
            // Still in the write buffer: read the buffered copy.
            let start = (offset - (self.data_len - self.data.buffer().len() as u64)) as usize;
            let mut at = start + 4;
            return take_str(self.data.buffer(), &mut at).map(Option::unwrap_or_default);
        }
        let record = self.record_at(offset)?;
        let mut at = 0;
        take_str(&record, &mut at).map(Option::unwrap_or_default)
    }

    /// Writes out the records inserted so far, so that [`Snapshot::take`] can read them (call
    /// it after each page).
    pub fn flush(&mut self) -> io::Result<()> {
        self.data.flush()
    }

    /// What the listing showed for `key`, once (see [`Lookup`]); `complete`: every page is in,
    /// so a SIM not listed is one the provider does not have. Call [`Snapshot::flush`] first.
    pub fn take(&mut self, key: &str, complete: bool) -> io::Result<Lookup> {
        let hash = key_hash(key);
        let mut i = hash & (self.slots - 1);
        loop {
            let (h, offset) = self.slot(i)?;
            if h == EMPTY {
                if !complete {
                    return Ok(Lookup::NotYet);
                }
                // Remember the question, so that asking again reads live too.
                if (self.entries + 1) * 2 > self.slots {
                    self.grow()?;
                    return self.take(key, complete);
                }
                Self::set_slot(&self.index, i, hash, TAKEN)?;
                self.entries += 1;
                return Ok(Lookup::NotListed);
            }
            if h == hash && offset != TAKEN {
                let (listed_key, state) = decode(&self.record_at(offset)?)?;
                if listed_key == key {
                    Self::set_slot(&self.index, i, hash, TAKEN)?;
                    return Ok(Lookup::Listed(state));
                }
            }
            if h == hash && offset == TAKEN {
                // Taken entries keep no offset, so their key cannot be compared: a 64-bit hash
                // collision between two SIMs of one listing would only send the second to a
                // live read, which is always correct.
                return Ok(Lookup::AlreadyTaken);
            }
            i = (i + 1) & (self.slots - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, status: &str) -> SimState {
        SimState {
            id: id.into(),
            status: status.into(),
            settled: true,
            group: Some("g".into()),
            device: Some(("7".into(), "ENABLED".into())),
            eid: None,
        }
    }

    #[test]
    fn each_listed_sim_is_answered_once_and_unlisted_ones_are_missing() {
        let mut s = Snapshot::new(4).unwrap();
        s.insert("8901", &state("a", "enabled")).unwrap();
        s.insert("8902", &state("b", "disabled")).unwrap();
        s.flush().unwrap();
        assert_eq!(
            s.take("8902", true).unwrap(),
            Lookup::Listed(state("b", "disabled"))
        );
        assert_eq!(s.take("8902", true).unwrap(), Lookup::AlreadyTaken);
        assert_eq!(s.take("8903", true).unwrap(), Lookup::NotListed);
        assert_eq!(s.take("8903", true).unwrap(), Lookup::AlreadyTaken);
        assert_eq!(
            s.take("8901", true).unwrap(),
            Lookup::Listed(state("a", "enabled"))
        );
    }

    #[test]
    fn while_listing_an_unlisted_sim_is_not_yet_known_and_nothing_is_remembered() {
        let mut s = Snapshot::new(4).unwrap();
        s.insert("8901", &state("a", "enabled")).unwrap();
        s.flush().unwrap();
        assert_eq!(s.take("8902", false).unwrap(), Lookup::NotYet);
        assert_eq!(s.take("8902", false).unwrap(), Lookup::NotYet);
        // The next page lists it: it is answered from the listing, once.
        s.insert("8902", &state("b", "disabled")).unwrap();
        s.flush().unwrap();
        assert_eq!(
            s.take("8902", false).unwrap(),
            Lookup::Listed(state("b", "disabled"))
        );
        assert_eq!(s.take("8902", false).unwrap(), Lookup::AlreadyTaken);
        // Taken while listing, then listed again by a later page: still read live.
        s.insert("8902", &state("b", "enabled")).unwrap();
        s.flush().unwrap();
        assert_eq!(s.take("8902", true).unwrap(), Lookup::AlreadyTaken);
        assert_eq!(s.take("8903", true).unwrap(), Lookup::NotListed);
    }

    #[test]
    fn grows_past_its_first_size_and_keeps_every_entry() {
        let mut s = Snapshot::new(1).unwrap();
        for i in 0..5_000u32 {
            s.insert(&format!("89{i:018}"), &state(&i.to_string(), "active"))
                .unwrap();
        }
        // A SIM listed twice keeps its first state.
        s.insert("89000000000000000007", &state("other", "x"))
            .unwrap();
        s.flush().unwrap();
        assert_eq!(s.len(), 5_000);
        for i in (0..5_000u32).rev() {
            assert_eq!(
                s.take(&format!("89{i:018}"), true).unwrap(),
                Lookup::Listed(state(&i.to_string(), "active")),
                "{i}"
            );
        }
    }

    #[test]
    fn absent_fields_and_long_values_survive_the_encoding() {
        let long = "x".repeat(70_000);
        let s = SimState {
            id: long.clone(),
            status: String::new(),
            settled: false,
            group: None,
            device: None,
            eid: Some("8904".into()),
        };
        let (key, back) = decode(&encode("k", &s)[4..]).unwrap();
        assert_eq!(key, "k");
        assert_eq!(back.id.len(), NONE_LEN as usize - 1);
        assert_eq!(
            (back.status, back.settled, back.group, back.device),
            (String::new(), false, None, None)
        );
        assert_eq!(back.eid.as_deref(), Some("8904"));
    }
}
