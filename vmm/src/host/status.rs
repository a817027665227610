//! What a running VMM reports about itself: counters shared by its threads,
//! served as one JSON object per connection on `--status ADDR` and printed by
//! `ftvmm status ADDR`, for scripts and people.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Standalone = 0,
    Recording = 1,
    Replaying = 2,
    Primary = 3,
    Backup = 4,
    /// A backup that went live.
    Live = 5,
}

impl Role {
    fn name(v: u8) -> &'static str {
        match v {
            1 => "recording",
            2 => "replaying",
            3 => "primary",
            4 => "backup",
            5 => "live",
            _ => "standalone",
        }
    }
}

/// Recent held times, for percentiles that describe now rather than all time.
#[derive(Debug, Default)]
struct Recent {
    ring: Vec<u32>,
    next: usize,
}

impl Recent {
    const LEN: usize = 4096;

    fn push(&mut self, v: u32) {
        if self.ring.len() < Self::LEN {
            self.ring.push(v);
        } else {
            self.ring[self.next] = v;
        }
        self.next = (self.next + 1) % Self::LEN;
    }

    fn percentiles(&self) -> (u32, u32, u32) {
        let mut s = self.ring.clone();
        if s.is_empty() {
            return (0, 0, 0);
        }
        s.sort_unstable();
        let at = |p: usize| s[(s.len() - 1) * p / 100];
        (at(50), at(99), s[s.len() - 1])
    }
}

/// What the fault-tolerance core reports about the group, as this member sees it.
/// (The host side knows nothing else of it: `ft::group::Group` implements this.)
pub trait GroupReport: Send + Sync {
    /// The replication epoch.
    fn epoch(&self) -> u64;
    /// A follower is in lockstep with this VM (primary), or this follower's primary is alive.
    fn protected(&self) -> bool;
    /// (acknowledged, replayed) exit of the least advanced follower on a primary, or
    /// this follower's own.
    fn positions(&self) -> (u64, u64);
    /// Where the peer is: the follower (or followers), or this follower's primary.
    fn peer(&self) -> String;
    /// The group's part of the status, as JSON members (`"key":value,...`), given this
    /// VM's exit index.
    fn json_fields(&self, exit_index: u64) -> String;
}

/// Counters shared by a running VMM's threads.
pub struct Stats {
    started: Instant,
    role: AtomicU8,
    /// The vCPU's exit index (the runner writes it).
    pub exit_index: Arc<AtomicU64>,
    pub log_bytes: AtomicU64,
    pub log_records: AtomicU64,
    pub held_outputs: AtomicU64,
    /// Longest time the peer was silent on the logging channel (µs), over this pairing:
    /// what the failover timeout must stay above.
    pub max_peer_silence_us: AtomicU64,
    pub outputs_released: AtomicU64,
    /// Times a watchdog found replication frozen behind healthy heartbeats.
    pub watchdog_trips: AtomicU64,
    /// Times the vCPU of a protected primary made no progress for the failover timeout
    /// (reported, not acted on: the cause may be the host, not replication).
    pub vcpu_stalls: AtomicU64,
    last_watchdog: Mutex<String>,
    recent_held: Mutex<Recent>,
    group: Mutex<Option<Arc<dyn GroupReport>>>,
}

impl Stats {
    pub fn new(role: Role) -> Arc<Stats> {
        Arc::new(Stats {
            started: Instant::now(),
            role: AtomicU8::new(role as u8),
            exit_index: Arc::new(AtomicU64::new(0)),
            log_bytes: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            held_outputs: AtomicU64::new(0),
            max_peer_silence_us: AtomicU64::new(0),
            outputs_released: AtomicU64::new(0),
            watchdog_trips: AtomicU64::new(0),
            vcpu_stalls: AtomicU64::new(0),
            last_watchdog: Mutex::new(String::new()),
            recent_held: Mutex::new(Recent::default()),
            group: Mutex::new(None),
        })
    }

    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::SeqCst);
    }

    /// The group this VMM is a member of, for its status.
    pub fn set_group(&self, group: Arc<dyn GroupReport>) {
        *self.group.lock().unwrap_or_else(|p| p.into_inner()) = Some(group);
    }

    /// The peer was last heard `silence` ago; keeps the maximum.
    pub fn note_silence(&self, silence: Duration) {
        self.max_peer_silence_us.fetch_max(silence.as_micros() as u64, Ordering::Relaxed);
    }

    /// A watchdog tripped: counted, kept for `status`, and logged loudly.
    pub fn note_watchdog(&self, what: &str) {
        tracing::error!("{what}");
        self.watchdog_trips.fetch_add(1, Ordering::SeqCst);
        *self.last_watchdog.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
    }

    pub fn note_held(&self, held: Duration) {
        let us = held.as_micros().min(u128::from(u32::MAX)) as u32;
        self.recent_held.lock().unwrap_or_else(|p| p.into_inner()).push(us);
        self.outputs_released.fetch_add(1, Ordering::Relaxed);
    }

    /// One JSON object describing this VMM now.
    pub fn snapshot(&self) -> String {
        let (p50, p99, max) = self.recent_held.lock().unwrap_or_else(|p| p.into_inner()).percentiles();
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let exit_index = self.exit_index.load(Ordering::Relaxed);
        let (epoch, protected, (acked, replayed), peer, group_fields) = match &group {
            Some(g) => (g.epoch(), g.protected(), g.positions(), g.peer(), g.json_fields(exit_index)),
            None => (0, false, (0, 0), String::new(), String::new()),
        };
        let role = self.role.load(Ordering::SeqCst);
        let leads = role == Role::Primary as u8 || role == Role::Live as u8;
        let lag = if leads && protected { exit_index.saturating_sub(replayed) } else { 0 };
        let last_watchdog = self.last_watchdog.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!(
            concat!(
                "{{{}\"role\":\"{}\",\"epoch\":{},\"protected\":{},\"peer\":\"{}\",\"exit_index\":{},",
                "\"acked_through\":{},\"replayed_through\":{},\"lag_exits\":{},\"held_outputs\":{},",
                "\"outputs_released\":{},\"held_p50_us\":{},\"held_p99_us\":{},\"held_max_us\":{},",
                "\"log_bytes\":{},\"log_records\":{},\"max_peer_silence_us\":{},\"watchdog_trips\":{},\"vcpu_stalls\":{},",
                "\"last_watchdog\":\"{}\",\"uptime_ms\":{}}}"
            ),
            group_fields,
            Role::name(role),
            epoch,
            protected,
            json_escape(&peer),
            exit_index,
            acked,
            replayed,
            lag,
            self.held_outputs.load(Ordering::Relaxed),
            self.outputs_released.load(Ordering::Relaxed),
            p50,
            p99,
            max,
            self.log_bytes.load(Ordering::Relaxed),
            self.log_records.load(Ordering::Relaxed),
            self.max_peer_silence_us.load(Ordering::Relaxed),
            self.watchdog_trips.load(Ordering::SeqCst),
            self.vcpu_stalls.load(Ordering::SeqCst),
            json_escape(&last_watchdog),
            self.started.elapsed().as_millis(),
        )
    }
}

/// `s` as the inside of a JSON string (quotes, backslashes and control characters escaped).
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Serves `stats` on `addr`: every connection gets one JSON line, then is closed.
pub fn serve(addr: &str, stats: Arc<Stats>) -> std::io::Result<()> {
    let listener = super::bind::listen(addr, super::bind::ADDR_IN_USE_GRACE)?;
    std::thread::Builder::new().name("status".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.write_all(format!("{}\n", stats.snapshot()).as_bytes());
        }
    })?;
    Ok(())
}

/// `ftvmm status ADDR`: fetches one snapshot.
pub fn fetch(addr: &str, timeout: Duration) -> std::io::Result<String> {
    let sock = addr
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr:?} is not IP:PORT")))?;
    let conn = TcpStream::connect_timeout(&sock, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut out = String::new();
    conn.take(64 * 1024).read_to_string(&mut out)?;
    Ok(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_one_json_object_with_the_role_and_recent_held_times() {
        let s = Stats::new(Role::Primary);
        for us in [100u64, 200, 300] {
            s.note_held(Duration::from_micros(us));
        }
        let j = s.snapshot();
        assert!(j.starts_with('{') && j.ends_with('}'), "{j}");
        assert!(j.contains("\"role\":\"primary\""), "{j}");
        assert!(j.contains("\"held_p50_us\":200"), "{j}");
        assert!(j.contains("\"outputs_released\":3"), "{j}");
    }

    #[test]
    fn a_watchdog_trip_is_counted_and_its_reason_is_valid_json() {
        let s = Stats::new(Role::Primary);
        s.note_watchdog("the backup's replay \"stood\" still\\\n");
        let j = s.snapshot();
        assert!(j.contains("\"watchdog_trips\":1"), "{j}");
        assert!(j.contains(r#""last_watchdog":"the backup's replay \"stood\" still\\\u000a""#), "{j}");
    }
}
