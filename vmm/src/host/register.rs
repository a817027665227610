//! A small record that several hosts read and replace atomically: a
//! compare-and-swap register, on shared storage or in etcd. The replica
//! group's witness keeps its ballot in one (`ft::election::witness`).
//!
//! - `file:DIR`: `DIR/<name>-witness` holds `version N` and the value; a swap
//!   takes an exclusive `flock` on `DIR/<name>-witness.lock`, checks the version,
//!   writes the new one to a temporary file, syncs it and renames it over the old.
//! - `etcd:URL[,URL...]`: the key `/ftvmm/<name>/witness`; a swap is a transaction
//!   that puts the value only if the key's `mod_revision` is still the one read
//!   (or, for version 0, only if the key was never created).
use super::arbiter::{etcd_post, ArbiterError, Location, ETCD_ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// After the group name in a witness file's name (`.lock` and `.tmp` go after it).
pub(crate) const WITNESS_FILE_SUFFIX: &str = "-witness";

/// The longest value a register holds (a witness ballot is a few dozen bytes).
pub const MAX_REGISTER_VALUE: usize = 4096;

/// A value and the version it was read at (0: never written).
pub type Versioned = (String, u64);

/// An atomic compare-and-swap register.
pub trait Register: Send + Sync {
    /// The current value and its version.
    fn read(&self) -> Result<Versioned, ArbiterError>;
    /// Replaces the value if it is still at `version`; `Ok(false)` if someone else
    /// replaced it first (read again and retry).
    fn swap(&self, version: u64, value: &str) -> Result<bool, ArbiterError>;
    /// Where it lives, for logs.
    fn describe(&self) -> String;
}

/// The etcd key of group `group`'s witness record.
pub(crate) fn witness_key(group: &str) -> String {
    format!("{ETCD_ROOT}{group}/witness")
}

/// Parses `file:DIR` or `etcd:URL,...`; `name` scopes the register (the group name).
pub fn from_spec(spec: &str, name: &str) -> Result<Box<dyn Register>, ArbiterError> {
    at(&Location::parse(spec)?, name)
}

/// The register of group `name` at `location`. A file location's directory is NOT
/// created here: this runs at every vote, and a witness directory that went away
/// (storage unmounted, say) must stay away rather than come back empty, which would
/// be a second witness that remembers no vote (the fault campaign found it). Nobody
/// creates it: the operator does, once ([`Location::unusable`]).
pub fn at(location: &Location, name: &str) -> Result<Box<dyn Register>, ArbiterError> {
    Ok(match location {
        Location::File(dir) => Box::new(FileRegister {
            path: dir.join(format!("{name}{WITNESS_FILE_SUFFIX}")),
            lock: dir.join(format!("{name}{WITNESS_FILE_SUFFIX}.lock")),
            // Not `with_extension`: group names hold dots ("10.77.0.10-..."), and two
            // groups' temporary files must not be one file.
            tmp: dir.join(format!("{name}{WITNESS_FILE_SUFFIX}.tmp")),
        }),
        Location::Etcd(endpoints) => Box::new(EtcdRegister { endpoints: endpoints.clone(), key: witness_key(name) }),
    })
}

/// A register in a file on storage the hosts share.
pub struct FileRegister {
    path: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

/// An exclusive `flock`, held while the file is open: released when dropped.
struct Locked {
    _file: std::fs::File,
}

impl Locked {
    fn take(path: &std::path::Path) -> std::io::Result<Locked> {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        // SAFETY: flock on a file descriptor this function owns for the call; no memory is
        // passed to the kernel.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Locked { _file: f })
    }
}

impl FileRegister {
    fn err(&self, source: std::io::Error) -> ArbiterError {
        ArbiterError::File { path: self.path.display().to_string(), source }
    }

    fn read_unlocked(&self) -> Result<Versioned, ArbiterError> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) if bytes.len() > MAX_REGISTER_VALUE + 32 => {
                return Err(ArbiterError::Protocol(format!("{} is too large to be a register", self.path.display())))
            }
            Ok(bytes) => String::from_utf8(bytes).map_err(|e| ArbiterError::Protocol(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
            Err(e) => return Err(self.err(e)),
        };
        let (head, value) = text.split_once('\n').unwrap_or((&text, ""));
        let version = head
            .strip_prefix("version ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ArbiterError::Protocol(format!("{} is damaged: {head:?}", self.path.display())))?;
        Ok((value.to_string(), version))
    }
}

impl Register for FileRegister {
    fn read(&self) -> Result<Versioned, ArbiterError> {
        let _lock = Locked::take(&self.lock).map_err(|e| self.err(e))?;
        self.read_unlocked()
    }

    fn swap(&self, version: u64, value: &str) -> Result<bool, ArbiterError> {
        if value.len() > MAX_REGISTER_VALUE {
            return Err(ArbiterError::Protocol(format!("a value of {} bytes", value.len())));
        }
        let _lock = Locked::take(&self.lock).map_err(|e| self.err(e))?;
        if self.read_unlocked()?.1 != version {
            return Ok(false);
        }
        let tmp = &self.tmp;
        let mut f = std::fs::File::create(tmp).map_err(|e| self.err(e))?;
        f.write_all(format!("version {}\n{value}", version + 1).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.err(e))?;
        std::fs::rename(tmp, &self.path).map_err(|e| self.err(e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.err(e))?;
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.parent().map(|p| p.display().to_string()).unwrap_or_default())
    }
}

/// A register in etcd.
pub struct EtcdRegister {
    endpoints: Vec<SocketAddr>,
    key: String,
}

impl EtcdRegister {
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, ArbiterError> {
        etcd_post(&self.endpoints, path, body)
    }
}

impl Register for EtcdRegister {
    fn read(&self) -> Result<Versioned, ArbiterError> {
        let reply = self.post("/v3/kv/range", &serde_json::json!({"key": B64.encode(&self.key)}))?;
        let Some(kv) = reply.get("kvs").and_then(|k| k.as_array()).and_then(|k| k.first()) else {
            return Ok((String::new(), 0));
        };
        let value = kv.get("value").and_then(|v| v.as_str()).and_then(|v| B64.decode(v).ok()).unwrap_or_default();
        let version = kv.get("mod_revision").and_then(|v| v.as_str()).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((String::from_utf8_lossy(&value).into_owned(), version))
    }

    fn swap(&self, version: u64, value: &str) -> Result<bool, ArbiterError> {
        let key = B64.encode(&self.key);
        let compare = if version == 0 {
            serde_json::json!({"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"})
        } else {
            serde_json::json!({"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": version.to_string()})
        };
        let txn = serde_json::json!({
            "compare": [compare],
            "success": [{"request_put": {"key": key, "value": B64.encode(value)}}],
        });
        let reply = self.post("/v3/kv/txn", &txn)?;
        if reply.get("header").is_none() {
            return Err(ArbiterError::Protocol(format!("txn reply without a header: {reply}")));
        }
        Ok(reply.get("succeeded").and_then(serde_json::Value::as_bool).unwrap_or(false))
    }

    fn describe(&self) -> String {
        Location::Etcd(self.endpoints.clone()).describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_register_swaps_only_from_the_version_read() {
        let dir = std::env::temp_dir().join(format!("ftvmm-register-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let a = from_spec(&format!("file:{}", dir.display()), "svc").expect("register");
        let b = from_spec(&format!("file:{}", dir.display()), "svc").expect("register");
        assert_eq!(a.read().expect("read"), (String::new(), 0));
        assert!(a.swap(0, "first").expect("swap"));
        assert!(!b.swap(0, "second").expect("swap"), "b read version 0, which is gone");
        let (value, version) = b.read().expect("read");
        assert_eq!((value.as_str(), version), ("first", 1));
        assert!(b.swap(1, "second").expect("swap"));
        assert_eq!(a.read().expect("read"), ("second".to_string(), 2));
        assert!(a.swap(2, &"x".repeat(MAX_REGISTER_VALUE + 1)).is_err(), "past the limit: refused");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreachable_etcd_register_is_an_error() {
        let r = from_spec("etcd:http://127.0.0.1:9", "svc").expect("register");
        assert!(matches!(r.read(), Err(ArbiterError::Unreachable(_))));
        assert!(matches!(r.swap(0, "v"), Err(ArbiterError::Unreachable(_))));
    }
}
