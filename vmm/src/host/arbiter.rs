//! The arbiter: who may go on alone (`docs/design.md`, "The group, its epoch and the arbiter").
//!
//! When the logging link breaks, the primary (dropping its backup) and the
//! backup (going live) may both want to run alone. Each must first win an
//! atomic test-and-set on the arbiter for the pair's current epoch; exactly
//! one can, and the loser halts. A node that finds an epoch at or after its
//! own already decided is stale and must not act as primary.
//!
//! Every record is scoped by the **group name** (`logging_channel::GroupName`,
//! `host::scope`): a new deployment has a new name, so an old one's claims
//! never block or fence it, and several groups share one arbiter.
//!
//! - `file:DIR`: a directory on storage both hosts share; the claim for epoch
//!   N is `DIR/<group>-epoch-N`, created with `O_CREAT|O_EXCL`.
//! - `etcd:URL[,URL...]`: an etcd v3 cluster through its JSON gateway; the
//!   claim is a transaction that puts `/ftvmm/<group>/epoch/N` only if it
//!   was never created.
//!
//! A claim holds `<holder>\nclaimed_at_unix <secs>\n`, for `ftvmm arbiter list`.
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    #[error("{0:?} must be file:DIR or etcd:http://HOST:PORT[,http://HOST:PORT...]")]
    Spec(String),
    #[error("the file arbiter at {path} is unusable: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the directory {0} does not exist: is the shared storage mounted, and is this the --arbiter/--witness the members use?")]
    NoDir(String),
    #[error("no etcd endpoint answered ({0}): is etcd running there, and reachable from this host?")]
    Unreachable(String),
    #[error("etcd answered something unexpected: {0}")]
    Protocol(String),
}

/// Where arbiter claims and witness records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on storage the hosts share.
    File(PathBuf),
    /// An etcd cluster's JSON gateways.
    Etcd(Vec<SocketAddr>),
}

impl Location {
    /// Parses `file:DIR` or `etcd:URL[,URL...]`.
    pub fn parse(spec: &str) -> Result<Location, ArbiterError> {
        if let Some(dir) = spec.strip_prefix("file:").filter(|d| !d.is_empty()) {
            return Ok(Location::File(PathBuf::from(dir)));
        }
        if let Some(list) = spec.strip_prefix("etcd:") {
            let endpoints = list.split(',').map(parse_endpoint).collect::<Option<Vec<_>>>();
            if let Some(endpoints) = endpoints.filter(|e| !e.is_empty()) {
                return Ok(Location::Etcd(endpoints));
            }
        }
        Err(ArbiterError::Spec(spec.into()))
    }

    /// As the flag would say it.
    pub fn describe(&self) -> String {
        match self {
            Location::File(dir) => format!("file:{}", dir.display()),
            Location::Etcd(eps) => {
                let eps: Vec<String> = eps.iter().map(|e| format!("http://{e}")).collect();
                format!("etcd:{}", eps.join(","))
            }
        }
    }

    /// Why a file location cannot be used now, if it cannot (its directory is missing
    /// or is not one). Nobody in ftvmm creates that directory: the operator makes it
    /// once on the storage the hosts share. A member that made it would, the day the
    /// storage is unmounted (or the directory taken away), make an empty one in its
    /// place — on an unmounted mount point, one only this host sees: a second arbiter
    /// or witness that remembers no claim and no vote (the fault campaign found a
    /// member re-creating a witness that was away, when it restarted to rejoin).
    pub fn unusable(&self) -> Option<String> {
        let Location::File(dir) = self else { return None };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!("{} is not a directory", dir.display())),
            Err(e) => Some(format!(
                "{}: {e}; create it once on the storage every member mounts (mkdir -p {}): no member creates it, \
                 so that storage that went away is never replaced by an empty directory",
                dir.display(),
                dir.display()
            )),
        }
    }
}

/// The file of group `group`'s claim for `epoch`.
pub(crate) fn claim_file(group: &str, epoch: u64) -> String {
    format!("{group}{CLAIM_FILE_INFIX}{epoch}")
}

/// Between the group name and the epoch in a claim file's name.
pub(crate) const CLAIM_FILE_INFIX: &str = "-epoch-";

/// Where every etcd key of ftvmm starts.
pub(crate) const ETCD_ROOT: &str = "/ftvmm/";

/// The etcd key of group `group`'s claim for `epoch` (zero-padded, so keys sort by epoch).
pub(crate) fn claim_key(group: &str, epoch: u64) -> String {
    format!("{ETCD_ROOT}{group}/epoch/{epoch:020}")
}

/// What a claim records: who won it and when.
pub(crate) fn claim_value(me: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{me}\nclaimed_at_unix {}\n", now.as_secs())
}

/// An atomic test-and-set per group and epoch.
pub trait Arbiter: Send + Sync {
    /// Tries to claim `epoch` of `group` for `me`. `Ok(true)`: this node won and may go on alone.
    fn claim(&self, group: &str, epoch: u64, me: &str) -> Result<bool, ArbiterError>;
    /// The highest epoch anyone has claimed in `group`, if any.
    fn latest_claim(&self, group: &str) -> Result<Option<u64>, ArbiterError>;
    /// Where it is, as the flag says it.
    fn describe(&self) -> String;
    /// Where it is, to list what it holds (`host::records`).
    fn location(&self) -> Location;
}

/// Parses `--arbiter`. A file arbiter's directory is not created (see
/// [`Location::unusable`]): while it is missing every claim fails, so nobody goes on alone.
pub fn from_spec(spec: &str) -> Result<Box<dyn Arbiter>, ArbiterError> {
    let location = Location::parse(spec)?;
    Ok(match location {
        Location::File(dir) => Box::new(FileArbiter { dir }),
        Location::Etcd(endpoints) => Box::new(EtcdArbiter { endpoints }),
    })
}

pub(crate) fn parse_endpoint(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/').parse().ok()
}

pub struct FileArbiter {
    dir: PathBuf,
}

impl Arbiter for FileArbiter {
    fn claim(&self, group: &str, epoch: u64, me: &str) -> Result<bool, ArbiterError> {
        let path = self.dir.join(claim_file(group, epoch));
        let err = |source| ArbiterError::File { path: path.display().to_string(), source };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(claim_value(me).as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    fn latest_claim(&self, group: &str) -> Result<Option<u64>, ArbiterError> {
        let err = |source| ArbiterError::File { path: self.dir.display().to_string(), source };
        let prefix = format!("{group}{CLAIM_FILE_INFIX}");
        let mut latest = None;
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            let epoch = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok());
            latest = latest.max(epoch);
        }
        Ok(latest)
    }

    fn describe(&self) -> String {
        self.location().describe()
    }

    fn location(&self) -> Location {
        Location::File(self.dir.clone())
    }
}

pub struct EtcdArbiter {
    endpoints: Vec<SocketAddr>,
}

const ETCD_TIMEOUT: Duration = Duration::from_millis(800);

impl EtcdArbiter {
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, ArbiterError> {
        etcd_post(&self.endpoints, path, body)
    }
}

/// POSTs `body` to `path` on the first of `endpoints` that answers (the arbiter's and
/// the witness register's way to etcd's JSON gateway).
pub(crate) fn etcd_post(
    endpoints: &[SocketAddr],
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ArbiterError> {
    let body = body.to_string();
    let mut errors = Vec::new();
    for ep in endpoints {
        match http_post(*ep, path, &body) {
            Ok(json) => return Ok(json),
            Err(e) => errors.push(format!("{ep}: {e}")),
        }
    }
    Err(ArbiterError::Unreachable(errors.join("; ")))
}

impl Arbiter for EtcdArbiter {
    fn claim(&self, group: &str, epoch: u64, me: &str) -> Result<bool, ArbiterError> {
        let key = B64.encode(claim_key(group, epoch));
        let txn = serde_json::json!({
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": B64.encode(claim_value(me))}}],
        });
        let reply = self.post("/v3/kv/txn", &txn)?;
        if reply.get("header").is_none() {
            return Err(ArbiterError::Protocol(format!("txn reply without a header: {reply}")));
        }
        Ok(reply.get("succeeded").and_then(serde_json::Value::as_bool).unwrap_or(false))
    }

    fn latest_claim(&self, group: &str) -> Result<Option<u64>, ArbiterError> {
        let prefix = format!("{ETCD_ROOT}{group}/epoch/");
        let range = serde_json::json!({"key": B64.encode(&prefix), "range_end": B64.encode(prefix_end(&prefix)), "keys_only": true});
        let reply = self.post("/v3/kv/range", &range)?;
        let kvs = reply.get("kvs").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        let epochs = kvs.iter().filter_map(|kv| {
            let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
            String::from_utf8(key).ok()?.strip_prefix(&prefix)?.parse::<u64>().ok()
        });
        Ok(epochs.max())
    }

    fn describe(&self) -> String {
        self.location().describe()
    }

    fn location(&self) -> Location {
        Location::Etcd(self.endpoints.clone())
    }
}

/// The end of etcd's range of keys that start with `prefix` (its last byte plus one).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// A minimal HTTP/1.1 POST with a JSON body and a JSON answer; etcd is the only peer.
pub(crate) fn http_post(ep: SocketAddr, path: &str, body: &str) -> Result<serde_json::Value, String> {
    let mut s = TcpStream::connect_timeout(&ep, ETCD_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(ETCD_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(ETCD_TIMEOUT)).map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {ep}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header in the answer")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("HTTP status {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body.trim()).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_arbiter_lets_exactly_one_claimant_win_each_epoch() {
        let dir = std::env::temp_dir().join(format!("ftvmm-arb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let a = from_spec(&format!("file:{}", dir.display())).expect("arbiter");
        let b = from_spec(&format!("file:{}", dir.display())).expect("arbiter");
        let g = "10.0.0.1-0badc0de";

        assert_eq!(a.latest_claim(g).expect("scan"), None);
        assert!(a.claim(g, 1, "primary").expect("claim"));
        assert!(!b.claim(g, 1, "backup").expect("claim"));
        assert!(b.claim(g, 2, "backup").expect("claim"));
        assert_eq!(a.latest_claim(g).expect("scan"), Some(2));
        // Another group, even of the same guest address (a new deployment), starts afresh.
        assert_eq!(a.latest_claim("10.0.0.1-feedf00d").expect("scan"), None, "groups do not see each other's claims");
        assert!(b.claim("10.0.0.1-feedf00d", 1, "primary").expect("claim"));
        // A group whose name is another's prefix is still another group.
        assert_eq!(a.latest_claim("10.0.0.1").expect("scan"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_specs_are_refused_with_the_accepted_forms() {
        for bad in ["", "file:", "etcd:", "etcd:nonsense", "zookeeper:x"] {
            let err = from_spec(bad).err().expect("refused").to_string();
            assert!(err.contains("file:DIR or etcd:"), "{err}");
        }
    }

    #[test]
    fn an_unreachable_etcd_is_an_error_never_a_win() {
        // Port 9 on loopback: nothing listens, so the connection is refused at once.
        let a = from_spec("etcd:http://127.0.0.1:9").expect("arbiter");
        assert!(matches!(a.claim("g", 1, "me"), Err(ArbiterError::Unreachable(_))));
    }

    #[test]
    fn a_missing_arbiter_directory_is_never_created_and_every_claim_fails_saying_why() {
        let dir = std::env::temp_dir().join(format!("ftvmm-arb-missing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = format!("file:{}", dir.display());
        let a = from_spec(&spec).expect("parsing does not need the directory");
        let why = a.location().unusable().expect("unusable");
        assert!(why.contains("mkdir -p") && why.contains("no member creates it"), "{why}");
        assert!(a.claim("g", 1, "backup").is_err(), "no claim is won without the directory");
        assert!(!dir.exists(), "neither parsing nor claiming creates it");
        std::fs::write(&dir, "a file").expect("file");
        assert!(a.location().unusable().is_some_and(|w| w.contains("not a directory")));
        std::fs::remove_file(&dir).expect("rm");
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(a.location().unusable(), None);
        assert!(a.claim("g", 1, "backup").expect("claim"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
