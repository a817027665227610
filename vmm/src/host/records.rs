//! What an arbiter or witness location holds, for `ftvmm arbiter list|clear`:
//! the records of every group there (arbiter claims, witness records), and
//! removing one group's (or, with a confirmation, all of them).
//!
//! ```text
//!   file:DIR   DIR/<group>-epoch-<N>                  a claim (host::arbiter)
//!              DIR/<group>-witness[.lock|.tmp]        a witness record (host::register)
//!   etcd:URL   /ftvmm/<group>/epoch/<N, 20 digits>    a claim
//!              /ftvmm/<group>/witness                 a witness record
//! ```
//! Members never need this: every deployment has its own group name. It is for
//! the rare manual case (a group retired for good, a disk filling up).
use super::arbiter::{etcd_post, prefix_end, ArbiterError, Location, CLAIM_FILE_INFIX, ETCD_ROOT};
use super::register::WITNESS_FILE_SUFFIX;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// The most bytes of one record read for the listing (claims and witness records are
/// a few dozen bytes).
const MAX_RECORD_READ: u64 = 4096;

/// One arbiter claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// Who won it ("backup pid 812 on host-b"), as it wrote it.
    pub holder: String,
    /// When (Unix seconds), if known.
    pub at_unix: Option<u64>,
}

/// A group's witness record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessRecord {
    pub epoch: Option<u64>,
    pub voted_for: Option<u64>,
    pub at_unix: Option<u64>,
}

/// Everything one group has at a location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRecords {
    pub claims: Vec<Claim>,
    pub witness: Option<WitnessRecord>,
    /// The keys or files that make them up (what `clear` removes).
    pub items: Vec<String>,
}

/// The groups at a location, by name.
pub type Listing = BTreeMap<String, GroupRecords>;

/// What a file or etcd key is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Claim(u64),
    Witness,
    /// A witness's lock or temporary file: belongs to the group, shows nothing.
    Aside,
}

/// Which group a file in a `file:` location belongs to, and what it is.
fn classify_file(name: &str) -> Option<(String, Item)> {
    if let Some((group, epoch)) = name.rsplit_once(CLAIM_FILE_INFIX) {
        if let Ok(epoch) = epoch.parse::<u64>() {
            return Some((group.to_string(), Item::Claim(epoch)));
        }
    }
    if let Some(group) = name.strip_suffix(WITNESS_FILE_SUFFIX) {
        return Some((group.to_string(), Item::Witness));
    }
    for aside in [".lock", ".tmp"] {
        if let Some(group) = name.strip_suffix(aside).and_then(|n| n.strip_suffix(WITNESS_FILE_SUFFIX)) {
            return Some((group.to_string(), Item::Aside));
        }
    }
    None
}

/// Which group an etcd key belongs to, and what it is.
fn classify_key(key: &str) -> Option<(String, Item)> {
    let rest = key.strip_prefix(ETCD_ROOT)?;
    let (group, what) = rest.split_once('/')?;
    let item = match what.strip_prefix("epoch/") {
        Some(n) => Item::Claim(n.parse().ok()?),
        None if what == "witness" => Item::Witness,
        None => return None,
    };
    Some((group.to_string(), item))
}

/// `holder\nclaimed_at_unix N\n` (older claims hold the holder alone).
fn parse_claim(epoch: u64, text: &str) -> Claim {
    let mut lines = text.lines();
    let holder = lines.next().unwrap_or("").trim().to_string();
    let at_unix = lines.find_map(|l| l.strip_prefix("claimed_at_unix ")).and_then(|n| n.trim().parse().ok());
    Claim { epoch, holder: if holder.is_empty() { "?".into() } else { holder }, at_unix }
}

/// The fields of a witness record that a listing shows (`ft::election::witness` owns
/// the format; a field it cannot read is shown as unknown).
fn parse_witness(text: &str) -> WitnessRecord {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    WitnessRecord {
        epoch: field("epoch "),
        voted_for: field("voted_for ").filter(|v| *v != 0),
        at_unix: field("updated_at_unix "),
    }
}

impl GroupRecords {
    fn add(&mut self, item: Item, text: &str, mtime: Option<u64>, name: String) {
        match item {
            Item::Claim(epoch) => {
                let mut claim = parse_claim(epoch, text);
                claim.at_unix = claim.at_unix.or(mtime);
                self.claims.push(claim);
            }
            Item::Witness => {
                let mut w = parse_witness(text);
                w.at_unix = w.at_unix.or(mtime);
                self.witness = Some(w);
            }
            Item::Aside => {}
        }
        self.items.push(name);
    }
}

/// Every group's records at `location`. A missing directory is an error (it is not
/// created: a typo should not look like an empty arbiter).
pub fn list(location: &Location) -> Result<Listing, ArbiterError> {
    let mut out = Listing::new();
    match location {
        Location::File(dir) => {
            let err = |source| ArbiterError::File { path: dir.display().to_string(), source };
            let entries = match std::fs::read_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ArbiterError::NoDir(dir.display().to_string()))
                }
                other => other.map_err(err)?,
            };
            for entry in entries {
                let entry = entry.map_err(err)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((group, item)) = classify_file(&name) else { continue };
                let (text, mtime) = read_small(&entry.path());
                out.entry(group).or_default().add(item, &text, mtime, name);
            }
        }
        Location::Etcd(endpoints) => {
            let range =
                serde_json::json!({"key": B64.encode(ETCD_ROOT), "range_end": B64.encode(prefix_end(ETCD_ROOT))});
            let reply = etcd_post(endpoints, "/v3/kv/range", &range)?;
            let kvs = reply.get("kvs").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
            for kv in kvs {
                let decode = |field: &str| {
                    kv.get(field).and_then(|v| v.as_str()).and_then(|v| B64.decode(v).ok()).unwrap_or_default()
                };
                let key = String::from_utf8_lossy(&decode("key")).into_owned();
                let Some((group, item)) = classify_key(&key) else { continue };
                let value = String::from_utf8_lossy(&decode("value")).into_owned();
                out.entry(group).or_default().add(item, &value, None, key);
            }
        }
    }
    for g in out.values_mut() {
        g.claims.sort_by_key(|c| c.epoch);
        g.items.sort();
    }
    Ok(out)
}

/// The first bytes of a small file and its modification time (Unix seconds).
fn read_small(path: &Path) -> (String, Option<u64>) {
    let mut text = String::new();
    let mut mtime = None;
    if let Ok(f) = std::fs::File::open(path) {
        mtime = f.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let _ = f.take(MAX_RECORD_READ).read_to_string(&mut text);
    }
    (text, mtime.map(|d| d.as_secs()))
}

/// What to clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// One group's records.
    Group(String),
    /// Every group's (the caller has had the operator confirm).
    All,
}

/// Why a clear removed nothing, or could not.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error(transparent)]
    Location(#[from] ArbiterError),
    #[error("{location} holds no records of group {group:?}; the groups there are: {known} (`ftvmm arbiter list` shows them)")]
    NoSuchGroup { location: String, group: String, known: String },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Removes the records `which` names; returns what was removed, per group.
pub fn clear(location: &Location, which: &Which) -> Result<Listing, ClearError> {
    let mut listing = list(location)?;
    if let Which::Group(group) = which {
        let Some(one) = listing.remove(group) else {
            let known = listing.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ClearError::NoSuchGroup {
                location: location.describe(),
                group: group.clone(),
                known: if known.is_empty() { "none".into() } else { known },
            });
        };
        listing = Listing::from([(group.clone(), one)]);
    }
    match location {
        Location::File(dir) => {
            for item in listing.values().flat_map(|g| g.items.iter()) {
                let path = dir.join(item);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ClearError::Remove { path: path.display().to_string(), source: e })
                    }
                    _ => {}
                }
            }
        }
        Location::Etcd(endpoints) => {
            for group in listing.keys() {
                let prefix = format!("{ETCD_ROOT}{group}/");
                let del = serde_json::json!({"key": B64.encode(&prefix), "range_end": B64.encode(prefix_end(&prefix))});
                let reply = etcd_post(endpoints, "/v3/kv/deleterange", &del)?;
                if reply.get("header").is_none() {
                    return Err(ArbiterError::Protocol(format!("deleterange reply without a header: {reply}")).into());
                }
            }
        }
    }
    Ok(listing)
}

/// `3m05s`-style age of `at` seen at `now` (Unix seconds).
pub fn age(at: Option<u64>, now: u64) -> String {
    let Some(at) = at else { return "?".into() };
    let s = now.saturating_sub(at);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The listing as a table: one line per group and record kind.
pub fn render(listing: &Listing, now: u64) -> String {
    let mut out = format!("{:<32} {:<8} {:>6}  {:<40} {:>7}\n", "GROUP", "RECORD", "EPOCH", "HOLDER / VOTE", "AGE");
    for (group, g) in listing {
        if let Some(last) = g.claims.last() {
            let epochs = match g.claims.first() {
                Some(first) if g.claims.len() > 1 => {
                    format!(" ({} claims, epochs {}-{})", g.claims.len(), first.epoch, last.epoch)
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{group:<32} {:<8} {:>6}  {:<40} {:>7}{epochs}",
                "arbiter",
                last.epoch,
                last.holder,
                age(last.at_unix, now)
            );
        }
        if let Some(w) = &g.witness {
            let vote = w.voted_for.map_or("no vote".to_string(), |m| format!("voted for member {m}"));
            let epoch = w.epoch.map_or("?".to_string(), |e| e.to_string());
            let _ = writeln!(out, "{group:<32} {:<8} {epoch:>6}  {vote:<40} {:>7}", "witness", age(w.at_unix, now));
        }
    }
    out
}

/// What `clear` removed, in words.
pub fn describe_removed(removed: &Listing, location: &str) -> String {
    let mut out = String::new();
    for (group, g) in removed {
        let mut parts = Vec::new();
        match (g.claims.first(), g.claims.last()) {
            (Some(a), Some(b)) if a.epoch != b.epoch => {
                parts.push(format!("{} arbiter claims (epochs {}-{})", g.claims.len(), a.epoch, b.epoch))
            }
            (Some(a), _) => parts.push(format!("1 arbiter claim (epoch {})", a.epoch)),
            _ => {}
        }
        if g.witness.is_some() {
            parts.push("its witness record".into());
        }
        if parts.is_empty() {
            parts.push(format!("{} leftover file(s)", g.items.len()));
        }
        let _ = writeln!(out, "removed group {group}: {} from {location}", parts.join(" and "));
    }
    if removed.is_empty() {
        let _ = writeln!(out, "{location} holds no records: nothing removed");
    }
    out
}

#[cfg(test)]
mod tests;
