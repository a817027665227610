//! The arbiter: who may go on alone (`docs/design.md`, "The group, its epoch and the arbiter").
//!
//! When the logging link breaks, the primary (dropping its backup) and the
//! backup (going live) may both want to run alone. Each must first win an
//! atomic test-and-set on the arbiter for the pair's current epoch; exactly
//! one can, and the loser halts. A node that finds an epoch at or after its
//! own already decided is stale and must not act as primary.
//!
//! - `file:DIR`: a directory on storage both hosts share; the claim for epoch
//!   N is `DIR/<service>-epoch-N`, created with `O_CREAT|O_EXCL`.
//! - `etcd:URL[,URL...]`: an etcd v3 cluster through its JSON gateway; the
//!   claim is a transaction that puts `/ftvmm/<service>/epoch/N` only if it
//!   was never created.
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    #[error("--arbiter {0:?} must be file:DIR or etcd:http://HOST:PORT[,http://HOST:PORT...]")]
    Spec(String),
    #[error("the file arbiter at {path} is unusable: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no etcd endpoint answered ({0}); treating the claim as lost, which is the safe choice")]
    Unreachable(String),
    #[error("etcd answered something unexpected: {0}")]
    Protocol(String),
}

/// An atomic test-and-set per epoch.
pub trait Arbiter: Send + Sync {
    /// Tries to claim `epoch` for `me`. `Ok(true)`: this node won and may go on alone.
    fn claim(&self, epoch: u64, me: &str) -> Result<bool, ArbiterError>;
    /// The highest epoch anyone has claimed, if any.
    fn latest_claim(&self) -> Result<Option<u64>, ArbiterError>;
    fn describe(&self) -> String;
}

/// Parses `--arbiter`. `service` names the replicated VM (its guest address), so
/// several pairs can share one arbiter.
pub fn from_spec(spec: &str, service: &str) -> Result<Box<dyn Arbiter>, ArbiterError> {
    if let Some(dir) = spec.strip_prefix("file:") {
        if dir.is_empty() {
            return Err(ArbiterError::Spec(spec.into()));
        }
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|source| ArbiterError::File { path: dir.display().to_string(), source })?;
        return Ok(Box::new(FileArbiter { dir, service: service.to_string() }));
    }
    if let Some(list) = spec.strip_prefix("etcd:") {
        let endpoints = list.split(',').map(parse_endpoint).collect::<Option<Vec<_>>>();
        return match endpoints {
            Some(endpoints) if !endpoints.is_empty() => {
                Ok(Box::new(EtcdArbiter { endpoints, service: service.into() }))
            }
            _ => Err(ArbiterError::Spec(spec.into())),
        };
    }
    Err(ArbiterError::Spec(spec.into()))
}

pub(crate) fn parse_endpoint(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/').parse().ok()
}

pub struct FileArbiter {
    dir: PathBuf,
    service: String,
}

impl FileArbiter {
    fn prefix(&self) -> String {
        format!("{}-epoch-", self.service)
    }
}

impl Arbiter for FileArbiter {
    fn claim(&self, epoch: u64, me: &str) -> Result<bool, ArbiterError> {
        let path = self.dir.join(format!("{}{epoch}", self.prefix()));
        let err = |source| ArbiterError::File { path: path.display().to_string(), source };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(me.as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    fn latest_claim(&self) -> Result<Option<u64>, ArbiterError> {
        let err = |source| ArbiterError::File { path: self.dir.display().to_string(), source };
        let prefix = self.prefix();
        let mut latest = None;
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            let epoch = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok());
            latest = latest.max(epoch);
        }
        Ok(latest)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }
}

pub struct EtcdArbiter {
    endpoints: Vec<SocketAddr>,
    service: String,
}

const ETCD_TIMEOUT: Duration = Duration::from_millis(800);

impl EtcdArbiter {
    fn key(&self, epoch: u64) -> String {
        format!("/ftvmm/{}/epoch/{epoch:020}", self.service)
    }

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
    fn claim(&self, epoch: u64, me: &str) -> Result<bool, ArbiterError> {
        let key = B64.encode(self.key(epoch));
        let txn = serde_json::json!({
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": B64.encode(me)}}],
        });
        let reply = self.post("/v3/kv/txn", &txn)?;
        if reply.get("header").is_none() {
            return Err(ArbiterError::Protocol(format!("txn reply without a header: {reply}")));
        }
        Ok(reply.get("succeeded").and_then(serde_json::Value::as_bool).unwrap_or(false))
    }

    fn latest_claim(&self) -> Result<Option<u64>, ArbiterError> {
        let prefix = format!("/ftvmm/{}/epoch/", self.service);
        let mut end = prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let range = serde_json::json!({"key": B64.encode(&prefix), "range_end": B64.encode(&end), "keys_only": true});
        let reply = self.post("/v3/kv/range", &range)?;
        let kvs = reply.get("kvs").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        let epochs = kvs.iter().filter_map(|kv| {
            let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
            String::from_utf8(key).ok()?.strip_prefix(&prefix)?.parse::<u64>().ok()
        });
        Ok(epochs.max())
    }

    fn describe(&self) -> String {
        let eps: Vec<String> = self.endpoints.iter().map(|e| format!("http://{e}")).collect();
        format!("etcd:{}", eps.join(","))
    }
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
        let a = from_spec(&format!("file:{}", dir.display()), "10.0.0.1").expect("arbiter");
        let b = from_spec(&format!("file:{}", dir.display()), "10.0.0.1").expect("arbiter");

        assert_eq!(a.latest_claim().expect("scan"), None);
        assert!(a.claim(1, "primary").expect("claim"));
        assert!(!b.claim(1, "backup").expect("claim"));
        assert!(b.claim(2, "backup").expect("claim"));
        assert_eq!(a.latest_claim().expect("scan"), Some(2));
        let other = from_spec(&format!("file:{}", dir.display()), "10.0.0.9").expect("arbiter");
        assert_eq!(other.latest_claim().expect("scan"), None, "services do not see each other's claims");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_specs_are_refused_with_the_accepted_forms() {
        for bad in ["", "file:", "etcd:", "etcd:nonsense", "zookeeper:x"] {
            let err = from_spec(bad, "s").err().expect("refused").to_string();
            assert!(err.contains("file:DIR or etcd:"), "{err}");
        }
    }

    #[test]
    fn an_unreachable_etcd_is_an_error_never_a_win() {
        // Port 9 on loopback: nothing listens, so the connection is refused at once.
        let a = from_spec("etcd:http://127.0.0.1:9", "s").expect("arbiter");
        assert!(matches!(a.claim(1, "me"), Err(ArbiterError::Unreachable(_))));
    }
}
