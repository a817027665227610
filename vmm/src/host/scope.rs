//! The name this member's group goes by: the scope of its arbiter claims and
//! witness record (`docs/design.md`, "The group's name").
//!
//! ```text
//!   --group-name NAME given      -> NAME, sent in every hello, never replaced
//!   a primary (`ftvmm primary`)  -> made up at start: <guest address>-<8 random hex digits>
//!   a backup                     -> none until it pairs; then its primary's (from the Hello)
//!   a replica member             -> the one in DATA_DIR/group-name; else none until it
//!                                   joins a primary (then stored), or it is elected first
//!                                   (then it makes one up, stored)
//! ```
//! A primary boots a fresh VM, so every start of `ftvmm primary` is a new
//! deployment with a new name: an old deployment's records never block it.
use logging_channel::{GroupName, GroupNameError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The file in a replica member's data directory that holds its group's name.
pub const NAME_FILE: &str = "group-name";

/// Why the group name could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cannot {what} the group name in {path}: {source} (the member's --data-dir must be writable)")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a group name ({why}); remove it if this member should learn the name from its primary again")]
    Damaged { path: String, why: GroupNameError },
    #[error("cannot read random bytes for a new group name from /dev/urandom: {0}")]
    Random(std::io::Error),
}

/// This member's group name, shared by the group (arbiter claims) and the elector
/// (the witness).
#[derive(Debug)]
pub struct Scope {
    name: Mutex<GroupName>,
    /// Given with `--group-name`: a follower sends it in its hello, and it never changes.
    explicit: bool,
    /// Where a replica member keeps the name across restarts.
    file: Option<PathBuf>,
    /// The guest's address, the first part of a name this member makes up.
    guest: String,
}

impl Default for Scope {
    /// A member that does not know its group's name (it learns it from its primary).
    fn default() -> Scope {
        Scope::unknown()
    }
}

impl Scope {
    /// The name the operator gave.
    pub fn given(name: GroupName) -> Scope {
        Scope { name: Mutex::new(name), explicit: !name.is_none(), file: None, guest: String::new() }
    }

    /// A new group: a name made up from the guest's address and a random id.
    pub fn fresh(guest: &str) -> Result<Scope, ScopeError> {
        Ok(Scope { guest: guest.to_string(), ..Scope::given(fresh_name(guest)?).not_explicit() })
    }

    /// A member that learns the name from its primary.
    pub fn unknown() -> Scope {
        Scope::given(GroupName::NONE)
    }

    /// A replica member: the name stored in `dir` if any (a restart), else none yet;
    /// `given` (`--group-name`) wins over the stored one and is stored. `guest` is the
    /// guest's address, for a name this member makes up if it leads first.
    pub fn stored_in(dir: &Path, given: GroupName, guest: &str) -> Result<Scope, ScopeError> {
        let path = dir.join(NAME_FILE);
        std::fs::create_dir_all(dir).map_err(|source| ScopeError::Io {
            what: "store",
            path: dir.display().to_string(),
            source,
        })?;
        let scope = Scope { file: Some(path.clone()), guest: guest.to_string(), ..Scope::given(given) };
        if !given.is_none() {
            scope.store(given)?;
            return Ok(scope);
        }
        let mut text = String::new();
        match std::fs::File::open(&path) {
            Ok(f) => {
                // Past the longest name (and a newline): not a name file.
                f.take(logging_channel::MAX_GROUP_NAME as u64 + 2)
                    .read_to_string(&mut text)
                    .map_err(|source| ScopeError::Io { what: "read", path: path.display().to_string(), source })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scope),
            Err(source) => return Err(ScopeError::Io { what: "read", path: path.display().to_string(), source }),
        }
        let name = GroupName::new(text.trim_end_matches('\n'))
            .map_err(|why| ScopeError::Damaged { path: path.display().to_string(), why })?;
        *scope.lock() = name;
        Ok(scope)
    }

    fn not_explicit(mut self) -> Scope {
        self.explicit = false;
        self
    }

    fn lock(&self) -> MutexGuard<'_, GroupName> {
        self.name.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name, or [`GroupName::NONE`] while this member does not know it.
    pub fn name(&self) -> GroupName {
        *self.lock()
    }

    /// What a follower says in its hello: only a name it was given.
    pub fn introduce(&self) -> GroupName {
        if self.explicit {
            self.name()
        } else {
            GroupName::NONE
        }
    }

    /// Takes the name of the primary this member joined (a pairing with a different
    /// `--group-name` was refused before this).
    pub fn adopt(&self, primary: GroupName) -> Result<(), ScopeError> {
        if primary.is_none() || self.explicit {
            return Ok(());
        }
        let old = std::mem::replace(&mut *self.lock(), primary);
        if old != primary {
            if !old.is_none() {
                tracing::warn!(old = %old, new = %primary, "this member's primary belongs to another group now (a new deployment); following it");
            }
            tracing::info!(group = %primary, "group name learned from the primary");
            self.store(primary)?;
        }
        Ok(())
    }

    /// The name, making one up for a group's first primary.
    pub fn create_if_none(&self) -> Result<GroupName, ScopeError> {
        let mut name = self.lock();
        if name.is_none() {
            *name = fresh_name(&self.guest)?;
            tracing::info!(group = %*name, "this member starts a new group");
            self.store(*name)?;
        }
        Ok(*name)
    }

    fn store(&self, name: GroupName) -> Result<(), ScopeError> {
        let Some(path) = &self.file else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        let err = |what, source| ScopeError::Io { what, path: path.display().to_string(), source };
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("store", e))?;
        f.write_all(format!("{name}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(|e| err("store", e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("store", e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("store", e))?;
        }
        Ok(())
    }
}

/// `<guest>-<8 random hex digits>`: the guest's address says which VM, the random id
/// which deployment of it.
pub fn fresh_name(guest: &str) -> Result<GroupName, ScopeError> {
    let mut id = [0u8; 4];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id)).map_err(ScopeError::Random)?;
    let guest: String = guest.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').take(40).collect();
    let guest = if guest.is_empty() { "vm".to_string() } else { guest };
    let name = format!("{guest}-{:08x}", u32::from_le_bytes(id));
    // Only letters, digits and dots before the dash, and at most 49 bytes: always valid.
    GroupName::new(&name).map_err(|why| ScopeError::Damaged { path: "(a new name)".into(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ftvmm-scope-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn fresh_names_are_the_guest_address_and_a_random_id_and_differ() {
        let a = fresh_name("10.77.0.10").expect("name");
        let b = fresh_name("10.77.0.10").expect("name");
        assert!(a.as_str().starts_with("10.77.0.10-") && a.as_str().len() == "10.77.0.10-".len() + 8, "{a}");
        assert_ne!(a, b, "two deployments of one guest address get different names");
        assert!(fresh_name("").expect("name").as_str().starts_with("vm-"));
    }

    #[test]
    fn a_replica_member_keeps_the_name_it_learned_or_made_up_across_restarts() {
        let d = dir("keep");
        let first = Scope::stored_in(&d, GroupName::NONE, "10.0.0.1").expect("scope");
        assert!(first.name().is_none());
        let made = first.create_if_none().expect("create");
        assert!(made.as_str().starts_with("10.0.0.1-"), "{made}");
        assert_eq!(first.create_if_none().expect("again"), made, "made up once");
        assert_eq!(first.introduce(), GroupName::NONE, "a made-up name is not sent as a follower's");
        let restarted = Scope::stored_in(&d, GroupName::NONE, "10.0.0.1").expect("scope");
        assert_eq!(restarted.name(), made);
        let other = GroupName::new("10.0.0.1-00000001").expect("name");
        restarted.adopt(other).expect("adopt");
        assert_eq!(Scope::stored_in(&d, GroupName::NONE, "x").expect("scope").name(), other);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_given_name_is_sent_and_never_replaced() {
        let given = GroupName::new("prod").expect("name");
        let s = Scope::given(given);
        assert_eq!(s.introduce(), given);
        s.adopt(GroupName::new("other").expect("name")).expect("adopt");
        assert_eq!(s.name(), given);
        assert_eq!(Scope::unknown().introduce(), GroupName::NONE);
    }

    #[test]
    fn a_damaged_name_file_is_an_error_that_says_what_to_do() {
        let d = dir("damaged");
        std::fs::write(d.join(NAME_FILE), "../../etc\n").expect("write");
        let err = Scope::stored_in(&d, GroupName::NONE, "x").expect_err("refused").to_string();
        assert!(err.contains("remove it"), "{err}");
        // Longer than any name: read only up to the limit, and refused.
        std::fs::write(d.join(NAME_FILE), "a".repeat(10_000)).expect("write");
        assert!(Scope::stored_in(&d, GroupName::NONE, "x").is_err());
        let _ = std::fs::remove_dir_all(d);
    }
}
