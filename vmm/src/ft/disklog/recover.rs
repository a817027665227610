//! Reading a disk log back after a restart ([`recover`]): every frame's CRC and the
//! records' order are checked; it stops at a torn or corrupt record and cuts the file
//! after the last record that completed an exit.
use super::{segments, DiskLogError};
use crate::vm::checkpoint::machine_differs;
use logging_channel::file::HEADER_LEN;
use logging_channel::{codec, CodecError, LogHeader, Record, Sequencer};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a follower's disk log holds after a checkpoint.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The records after the checkpoint's exit, in order, through `position`.
    pub records: Vec<Record>,
    /// The highest exit the log (with the checkpoint) holds completely.
    pub position: u64,
    /// The highest epoch a standing mark in the log announced.
    pub epoch: u64,
    /// What was wrong at the end of the log, if anything (a torn or corrupt record, a gap).
    pub damage: Option<String>,
    /// The damage is only a torn last record: the write a crash interrupted, which was
    /// never fsync'd, so never acknowledged with `--fsync always`.
    pub torn_tail: bool,
    /// Bytes of log read.
    pub bytes: u64,
}

/// What follows a log file's header when the guest configuration is empty (the
/// format's block: length 0, no bytes, the CRC-32 of nothing, which is 0).
pub(super) const EMPTY_CONFIG_BLOCK: [u8; 8] = [0; 8];

/// Reads the log in `dir` after exit `from` (the restored checkpoint's), keeping at
/// most `limit` bytes of records; cuts it after the last complete exit and deletes
/// segments that cannot be used, so that appending can continue from `position`.
pub fn recover(dir: &Path, machine: &LogHeader, from: u64, limit: u64) -> Result<Recovered, DiskLogError> {
    let mut out = Recovered { position: from, ..Recovered::default() };
    let all = segments(dir);
    // The segment the checkpoint falls in, and those after it.
    let first = all.iter().rposition(|(start, _)| *start <= from);
    let Some(first) = first else {
        if !all.is_empty() {
            out.damage = Some(format!("the log on disk starts after exit {from}: it cannot continue this checkpoint"));
        }
        remove_all(&all);
        return Ok(out);
    };
    let mut seq = Sequencer::starting_at(all[first].0);
    let mut keep: Option<(usize, u64)> = None; // (segment, byte length) of the last complete exit
    for (i, (start, path)) in all.iter().enumerate().skip(first) {
        if seq.covered_through() != Some(*start) {
            out.damage = Some(format!("a gap in the log before {}", path.display()));
            break;
        }
        let stop = read_segment(path, machine, from, limit, &mut seq, &mut out, |len| keep = Some((i, len)))?;
        if let Some(why) = stop {
            out.damage = Some(why);
            // Torn in the last segment only: one torn before another was not the last write.
            out.torn_tail &= i + 1 == all.len();
            break;
        }
    }
    // Cut after the last complete exit; later segments go.
    match keep {
        Some((i, len)) if seq.covered_through().is_some_and(|c| c > from) => {
            let cut = fs::OpenOptions::new().write(true).open(&all[i].1).and_then(|f| f.set_len(len));
            cut.map_err(|source| DiskLogError::Io { path: all[i].1.display().to_string(), source })?;
            remove_all(&all[i + 1..]);
            out.records.retain(|r| r.exit_index() <= out.position || is_side_mark(r));
        }
        _ => {
            // Nothing after the checkpoint: the segments hold nothing it needs.
            out.records.clear();
            out.position = from;
            remove_all(&all);
        }
    }
    Ok(out)
}

fn is_side_mark(r: &Record) -> bool {
    matches!(r, Record::Released { .. } | Record::Standing { .. })
}

fn remove_all(segments: &[(u64, PathBuf)]) {
    for (_, path) in segments {
        let _ = fs::remove_file(path);
    }
}

/// Reads one segment into `out`; `complete(len)` is told the file length after every
/// record that completes an exit. Returns why reading must stop, if it must.
fn read_segment(
    path: &Path,
    machine: &LogHeader,
    from: u64,
    limit: u64,
    seq: &mut Sequencer,
    out: &mut Recovered,
    mut complete: impl FnMut(u64),
) -> Result<Option<String>, DiskLogError> {
    let shown = path.display().to_string();
    let io = |source| DiskLogError::Io { path: shown.clone(), source };
    let mut file = File::open(path).map_err(io)?;
    let mut header = [0u8; HEADER_LEN];
    if file.read_exact(&mut header).is_err() {
        return Ok(Some(format!("{shown} ends inside its header")));
    }
    let header = match LogHeader::from_bytes(&header) {
        Ok(h) => h,
        Err(e) => return Ok(Some(format!("{shown} has a bad header: {e}"))),
    };
    if let Some(what) = machine_differs(&header, machine) {
        return Err(DiskLogError::Foreign { path: shown, what });
    }
    let mut block = [0u8; EMPTY_CONFIG_BLOCK.len()];
    if file.read_exact(&mut block).is_err() || block != EMPTY_CONFIG_BLOCK {
        return Ok(Some(format!("{shown} has no empty guest-configuration block after its header")));
    }
    let mut offset = (HEADER_LEN + EMPTY_CONFIG_BLOCK.len()) as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(io)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            // A write cut short leaves part of one frame. A frame whose length was
            // corrupted reads the same, but whole frames follow it: not a torn tail.
            if frame_within(&buf[1..]) {
                return Ok(Some(format!(
                    "{shown} has a corrupt frame length at byte {offset}: the log is used up to there"
                )));
            }
            out.torn_tail = true;
            return Ok(Some(format!("{shown} ends in a torn record (a crash while writing)")));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        loop {
            let (record, len) = match codec::decode(&buf[used..]) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Ok(Some(corrupt(&shown, offset, &e))),
            };
            if let Err(e) = seq.check(&record) {
                return Ok(Some(corrupt(&shown, offset, &e)));
            }
            used += len;
            offset += len as u64;
            if let Record::Standing { epoch, .. } = record {
                out.epoch = out.epoch.max(epoch);
            }
            let completes = matches!(record, Record::Entry { .. } | Record::Progress { .. });
            if record.exit_index() > from || is_side_mark(&record) && out.position > from {
                out.bytes += len as u64;
                out.records.push(record);
            }
            if completes {
                out.position = out.position.max(seq.covered_through().unwrap_or(from));
                complete(offset);
            }
            if out.bytes > limit {
                return Ok(Some(format!(
                    "the log after the checkpoint is over {limit} bytes: replaying only that much"
                )));
            }
        }
        buf.drain(..used);
    }
}

/// Whether a whole, checksummed frame starts anywhere in `bytes`. The next frame after
/// a damaged one starts within a frame's length of it, so only that far is searched.
fn frame_within(bytes: &[u8]) -> bool {
    let reach = bytes.len().min(logging_channel::MAX_FRAME_LEN + 8);
    (0..reach).any(|at| matches!(codec::decode(&bytes[at..]), Ok(Some(_))))
}

fn corrupt(path: &str, offset: u64, e: &CodecError) -> String {
    format!("{path} is corrupt at byte {offset} ({e}): the log is used up to there")
}
