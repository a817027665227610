//! A log sealed at a clean stand-down: the note a replica member leaves in its
//! `--data-dir` when it stands down (it lost its majority, or another member
//! leads a later epoch) and starts its process over to rejoin.
//!
//! ```text
//!   stand-down:  the VM has stopped  ->  disk log written and fsync'd whole (DiskLog::seal)
//!                ->  DIR/sealed-log  "ftvmm sealed log v1 exit=<X> released=<R>\n"  (temp
//!                    file, fsync, rename, fsync DIR)  ->  exec
//!   start:       DIR/sealed-log read and deleted (DIR fsync'd) before anything else
//!                ->  checkpoint restored, disk log read: it ends at X, undamaged?
//!                      yes: the member holds every exit it ever acknowledged or logged,
//!                           so it keeps its vote and may stand, on that log; if it goes
//!                           live, it re-sends the output after R (what never left)
//!                      no:  it counts as restarted (it rejoins before it votes)
//! ```
//! Why: a member killed with `kill -9` may have acknowledged records its disk log
//! never got (acks go out on receipt; the disk follows), so after a crash it must not
//! vote on what its disk says (`rules::Voter::lost_log`). A member that stands down
//! is not killed: it stops its VM itself and can put its whole log on the disk
//! first. Treating it as crashed left a group of two with no one to lead once the
//! other member crashed too, although the state was on this member's disk (the
//! fault campaign's finding, tests/tests/witness_away.rs).
//!
//! The note is taken (deleted) before it is used, so it counts once: a member that
//! restarts again, after running on, is a crash like any other. A note that cannot
//! be read is no note: the member counts as restarted, which is always safe.
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The note's file in the data directory.
pub const SEAL_FILE: &str = "sealed-log";
const MAGIC: &str = "ftvmm sealed log v1 exit=";
const RELEASED: &str = " released=";

/// What the note says: the log on disk covers exactly through `exit`, and the output
/// of the exits through `released` has left the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub exit: u64,
    pub released: u64,
}

/// Why a seal could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot write {path}: {source}; the member will count as restarted (it rejoins before it votes)")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot delete {path}: {source}; a note that cannot be deleted could be used twice, so it is not used \
         (the member counts as restarted); check the data directory's permissions"
    )]
    Take {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Seal {
    /// The note's text.
    pub fn encode(&self) -> String {
        format!("{MAGIC}{}{RELEASED}{}\n", self.exit, self.released)
    }

    /// Reads a note; anything but exactly what [`Seal::encode`] writes is `None`, and so
    /// is a note whose released mark passes its log.
    pub fn decode(text: &str) -> Option<Seal> {
        let (exit, released) = text.strip_prefix(MAGIC)?.strip_suffix('\n')?.split_once(RELEASED)?;
        let number = |digits: &str| -> Option<u64> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let seal = Seal { exit: number(exit)?, released: number(released)? };
        (seal.released <= seal.exit).then_some(seal)
    }
}

/// Writes the note durably: a crash leaves either no note or a whole one.
pub fn write(dir: &Path, seal: Seal) -> Result<(), SealError> {
    let path = dir.join(SEAL_FILE);
    let tmp = dir.join(format!("{SEAL_FILE}.tmp"));
    let failed = |source| SealError::Write { path: path.display().to_string(), source };
    let mut f = File::create(&tmp).map_err(failed)?;
    f.write_all(seal.encode().as_bytes()).and_then(|()| f.sync_all()).map_err(failed)?;
    fs::rename(&tmp, &path).map_err(failed)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(failed)
}

/// Takes the note from `dir`: reads it and deletes it (durably) before returning it.
/// `Ok(None)` when there is none, or it does not parse (it is deleted all the same).
pub fn take(dir: &Path) -> Result<Option<Seal>, SealError> {
    let path = dir.join(SEAL_FILE);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; this member counts as restarted", path.display());
            Vec::new()
        }
    };
    let taken = |source| SealError::Take { path: path.display().to_string(), source };
    fs::remove_file(&path).map_err(taken)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(taken)?;
    let seal = std::str::from_utf8(&text).ok().and_then(Seal::decode);
    if seal.is_none() && !text.is_empty() {
        tracing::warn!("{} is not a sealed-log note: ignored (this member counts as restarted)", path.display());
    }
    Ok(seal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_once() {
        let dir = std::env::temp_dir().join(format!("ftvmm-seal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        assert_eq!(take(&dir).expect("no note"), None);
        write(&dir, Seal { exit: 123_456, released: 123_000 }).expect("written");
        assert_eq!(take(&dir).expect("taken"), Some(Seal { exit: 123_456, released: 123_000 }));
        assert_eq!(take(&dir).expect("gone"), None, "a note counts once");
        fs::write(dir.join(SEAL_FILE), b"garbage").expect("write");
        assert_eq!(take(&dir).expect("taken"), None);
        assert!(!dir.join(SEAL_FILE).exists(), "a bad note is deleted too");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_exact_text_is_a_note() {
        for good in [Seal { exit: u64::MAX, released: u64::MAX }, Seal { exit: 7, released: 0 }] {
            assert_eq!(Seal::decode(&good.encode()), Some(good));
        }
        for bad in [
            "",
            "ftvmm sealed log v1 exit=",
            "ftvmm sealed log v1 exit=\n",
            "ftvmm sealed log v1 exit=12 released=3",
            "ftvmm sealed log v1 exit=12\n",
            "ftvmm sealed log v1 exit=-1 released=0\n",
            "ftvmm sealed log v1 exit=+1 released=0\n",
            "ftvmm sealed log v1 exit= 1 released=0\n",
            "ftvmm sealed log v1 exit=1 released=\n",
            "ftvmm sealed log v1 exit=18446744073709551616 released=0\n",
            "ftvmm sealed log v1 exit=5 released=6\n",
            "ftvmm sealed log v2 exit=1 released=0\n",
            "ftvmm sealed log v1 exit=1 released=0\n\n",
        ] {
            assert_eq!(Seal::decode(bad), None, "{bad:?}");
        }
    }
}
