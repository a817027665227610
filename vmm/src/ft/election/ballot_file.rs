//! A member's ballot on disk: Raft's stable storage for `currentTerm` and
//! `votedFor`. A member that forgot whom it voted for could vote twice in one
//! epoch after a restart, and two candidates could both win it.
//!
//! ```text
//!   DIR/ballot:   "ftvmm-ballot 1\nepoch 7\nvoted_for 2\n"   (voted_for 0: nobody)
//! ```
//! Written whole to `ballot.tmp`, synced, renamed over `ballot`, and the
//! directory synced: a crash leaves the old ballot or the new one, never half.
use super::rules::Ballot;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "ftvmm-ballot 1";
/// A ballot file is a few dozen bytes; anything bigger is not one.
const MAX_BALLOT_FILE: u64 = 4096;

/// Why the ballot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BallotError {
    #[error("cannot use the data directory {dir}: {source} (a member must remember its votes: give it a writable --data-dir)")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the ballot {path}: {source}; not voting without it")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the ballot {path} is damaged ({why}); move it away only if this member never voted since it was written")]
    Damaged { path: String, why: String },
}

/// The ballot file of one member.
#[derive(Debug)]
pub struct BallotFile {
    dir: PathBuf,
}

impl BallotFile {
    /// Opens (creating) `dir` and reads the ballot in it, or a fresh one.
    pub fn open(dir: &Path) -> Result<(BallotFile, Ballot), BallotError> {
        let dir_err = |source| BallotError::Dir { dir: dir.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let file = BallotFile { dir: dir.to_path_buf() };
        let path = file.path();
        let ballot = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ballot::default(),
            Err(e) => return Err(dir_err(e)),
            Ok(m) if m.len() > MAX_BALLOT_FILE => {
                return Err(damaged(&path, format!("{} bytes, more than a ballot ever is", m.len())))
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&path).map_err(|e| damaged(&path, e.to_string()))?;
                parse(&text).map_err(|why| damaged(&path, why))?
            }
        };
        Ok((file, ballot))
    }

    fn path(&self) -> PathBuf {
        self.dir.join("ballot")
    }

    /// Stores `ballot` durably; returns only once it is on disk.
    pub fn store(&self, ballot: &Ballot) -> Result<(), BallotError> {
        let tmp = self.dir.join("ballot.tmp");
        let path = self.path();
        let err = |source| BallotError::Write { path: path.display().to_string(), source };
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(render(ballot).as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(err)
    }
}

fn damaged(path: &Path, why: String) -> BallotError {
    BallotError::Damaged { path: path.display().to_string(), why }
}

fn render(b: &Ballot) -> String {
    format!("{MAGIC}\nepoch {}\nvoted_for {}\n", b.epoch, b.voted_for.unwrap_or(0))
}

fn parse(text: &str) -> Result<Ballot, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("it does not start with {MAGIC:?}"));
    }
    let mut field = |name: &str| -> Result<u64, String> {
        let line = lines.next().ok_or_else(|| format!("no {name} line"))?;
        let value = line
            .strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .ok_or_else(|| format!("expected {name}, got {line:?}"))?;
        value.parse().map_err(|e| format!("{name} {value:?}: {e}"))
    };
    let epoch = field("epoch")?;
    let voted = field("voted_for")?;
    Ok(Ballot { epoch, voted_for: (voted != 0).then_some(voted) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ftvmm-ballot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_stored_ballot_is_what_a_restarted_member_reads() {
        let d = dir("roundtrip");
        let (file, fresh) = BallotFile::open(&d).expect("opens");
        assert_eq!(fresh, Ballot::default());
        file.store(&Ballot { epoch: 9, voted_for: Some(3) }).expect("stores");
        let (_, read) = BallotFile::open(&d).expect("reopens");
        assert_eq!(read, Ballot { epoch: 9, voted_for: Some(3) });
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_damaged_or_oversized_ballot_is_refused_not_taken_for_a_fresh_one() {
        let d = dir("damaged");
        std::fs::create_dir_all(&d).expect("dir");
        for bad in
            ["", "ftvmm-ballot 1\nepoch x\n", "something else\nepoch 1\nvoted_for 0\n", "ftvmm-ballot 1\nepoch 3\n"]
        {
            std::fs::write(d.join("ballot"), bad).expect("write");
            let err = BallotFile::open(&d).expect_err(bad);
            assert!(err.to_string().contains("damaged"), "{err}");
        }
        std::fs::write(d.join("ballot"), vec![b'x'; MAX_BALLOT_FILE as usize + 1]).expect("write");
        assert!(BallotFile::open(&d).expect_err("oversized").to_string().contains("more than a ballot"));
        let _ = std::fs::remove_dir_all(d);
    }
}
