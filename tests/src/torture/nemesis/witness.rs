//! A file witness that goes away and comes back: the nemesis's "restart of the
//! witness". The witness directory is renamed away, so every read and swap of the
//! register fails (its lock file's directory is gone: the member counts no vote, the
//! safe outcome), then renamed back, whole, with the record it held.
//!
//! No member creates a witness directory (`Location::unusable` in vmm's
//! host/arbiter.rs): one that did, restarting while the witness was away, made an
//! empty second witness — the long campaign's seed 2011 caught a member that stood
//! down for want of the witness and re-executed itself to rejoin doing exactly that.
//! [`start`] checks it: a directory that reappeared is reported as a nemesis failure.
//! The nemesis still restarts a member killed during the outage after the witness is
//! back, so that the kill and the outage stay one fault.
use std::path::{Path, PathBuf};

/// Where the directory waits while the witness is away.
fn away(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".away");
    PathBuf::from(name)
}

/// Takes the witness in `dir` away.
pub fn stop(dir: &Path) -> Result<(), String> {
    std::fs::rename(dir, away(dir)).map_err(|e| format!("cannot take the witness {} away: {e}", dir.display()))
}

/// Brings it back. A directory that reappeared meanwhile (a member created it) is an
/// error: it would be a second witness.
pub fn start(dir: &Path) -> Result<(), String> {
    let from = away(dir);
    if !from.exists() {
        return Ok(());
    }
    if dir.exists() {
        return Err(format!("{} reappeared while the witness was away: a second, empty witness", dir.display()));
    }
    std::fs::rename(&from, dir).map_err(|e| format!("cannot bring the witness {} back: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_witness_goes_away_and_comes_back_with_its_record() {
        let root = crate::TempDir::new("nemesis-witness");
        let dir = root.path("claims");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("10.77.0.10-witness"), "version 3\nballot").expect("record");
        stop(&dir).expect("away");
        assert!(!dir.exists());
        assert!(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("x.lock")).is_err(), "no lock");
        start(&dir).expect("back");
        assert_eq!(std::fs::read_to_string(dir.join("10.77.0.10-witness")).expect("kept"), "version 3\nballot");
        start(&dir).expect("bringing back a witness that is there is a no-op");
        stop(&dir).expect("away");
        std::fs::create_dir_all(&dir).expect("a member recreates it");
        assert!(start(&dir).unwrap_err().contains("second, empty witness"));
    }
}
