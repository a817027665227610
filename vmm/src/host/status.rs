//! What a running VMM reports about itself: counters shared by its threads, served
//! over HTTP on `--status ADDR` (`/status` as one JSON object, `/metrics` for
//! Prometheus, `/` a dashboard: see [`super::http`]) and printed by `ftvmm status ADDR`,
//! for scripts and people.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// The role's name in the status (`primary`, `live`, ...).
    pub fn name(v: u8) -> &'static str {
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

/// Upper bounds (µs) of the held-time histogram's buckets (`/metrics`).
pub const HELD_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

/// Every held time since start, in buckets: the Prometheus histogram.
#[derive(Debug, Default, Clone)]
pub struct HeldHistogram {
    /// Counts per bucket of [`HELD_BUCKETS_US`] (not cumulative), then the overflow.
    pub counts: [u64; HELD_BUCKETS_US.len() + 1],
    /// Sum of every held time (µs).
    pub sum_us: u64,
}

impl HeldHistogram {
    fn add(&mut self, us: u64) {
        let i = HELD_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(HELD_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_us += us;
    }
}

/// The most events the timeline keeps (older ones are dropped).
pub const MAX_EVENTS: usize = 64;

/// Something an operator wants on a timeline: a failover, a join, a role change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When (Unix ms).
    pub unix_ms: u64,
    /// `failover`, `role`, `join`, `resume`.
    pub kind: &'static str,
    /// What happened, for people.
    pub what: String,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
    /// Acknowledgements received from followers.
    pub acks: AtomicU64,
    /// Times this VMM went live in place of its primary.
    pub failovers: AtomicU64,
    /// Followers that joined by full state transfer, and the bytes sent to them.
    pub state_transfers: AtomicU64,
    pub state_transfer_bytes: AtomicU64,
    /// Followers that joined by resuming from the backlog (no state transfer).
    pub resumes: AtomicU64,
    last_watchdog: Mutex<String>,
    recent_held: Mutex<Recent>,
    held_histogram: Mutex<HeldHistogram>,
    events: Mutex<VecDeque<Event>>,
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
            acks: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            state_transfers: AtomicU64::new(0),
            state_transfer_bytes: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            last_watchdog: Mutex::new(String::new()),
            recent_held: Mutex::new(Recent::default()),
            held_histogram: Mutex::new(HeldHistogram::default()),
            events: Mutex::new(VecDeque::new()),
            group: Mutex::new(None),
        })
    }

    /// This VMM's role now; going live counts as a failover and every change is on the timeline.
    pub fn set_role(&self, role: Role) {
        let old = self.role.swap(role as u8, Ordering::SeqCst);
        if old == role as u8 {
            return;
        }
        if role == Role::Live {
            self.failovers.fetch_add(1, Ordering::SeqCst);
            self.note_event("failover", format!("{} went live", Role::name(old)));
        } else {
            self.note_event("role", format!("{} became {}", Role::name(old), Role::name(role as u8)));
        }
    }

    /// This VMM's role now.
    pub fn role(&self) -> u8 {
        self.role.load(Ordering::SeqCst)
    }

    /// Adds an event to the timeline (the oldest goes past [`MAX_EVENTS`]).
    pub fn note_event(&self, kind: &'static str, what: String) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(Event { unix_ms: unix_ms(), kind, what });
    }

    /// The timeline, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// A follower (`addr`) joined by state transfer of `bytes` bytes in `pages` pages.
    pub fn note_state_transfer(&self, addr: &str, bytes: u64, pages: u64) {
        self.state_transfers.fetch_add(1, Ordering::Relaxed);
        self.state_transfer_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.note_event("join", format!("{addr} joined by state transfer ({bytes} bytes, {pages} pages)"));
    }

    /// A follower (`addr`) joined by resuming from the backlog, sent `bytes` bytes of log.
    pub fn note_resume(&self, addr: &str, bytes: u64) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
        self.note_event("resume", format!("{addr} resumed from the backlog ({bytes} bytes of log)"));
    }

    /// The held-time histogram since start.
    pub fn held_histogram(&self) -> HeldHistogram {
        self.held_histogram.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The group's JSON members, if this VMM is in one.
    pub fn group_fields(&self) -> Option<String> {
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
        group.map(|g| g.json_fields(self.exit_index.load(Ordering::Relaxed)))
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
        self.held_histogram.lock().unwrap_or_else(|p| p.into_inner()).add(u64::from(us));
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
        let mut events = String::new();
        for (i, e) in self.events().iter().enumerate() {
            events.push_str(&format!(
                "{}{{\"unix_ms\":{},\"kind\":\"{}\",\"what\":\"{}\"}}",
                if i == 0 { "" } else { "," },
                e.unix_ms,
                e.kind,
                json_escape(&e.what)
            ));
        }
        format!(
            concat!(
                "{{{}\"role\":\"{}\",\"epoch\":{},\"protected\":{},\"peer\":\"{}\",\"exit_index\":{},",
                "\"acked_through\":{},\"replayed_through\":{},\"lag_exits\":{},\"held_outputs\":{},",
                "\"outputs_released\":{},\"held_p50_us\":{},\"held_p99_us\":{},\"held_max_us\":{},",
                "\"log_bytes\":{},\"log_records\":{},\"max_peer_silence_us\":{},\"watchdog_trips\":{},\"vcpu_stalls\":{},",
                "\"acks\":{},\"failovers\":{},\"state_transfers\":{},\"state_transfer_bytes\":{},\"resumes\":{},",
                "\"progress\":{},\"events\":[{}],\"unix_ms\":{},\"last_watchdog\":\"{}\",\"uptime_ms\":{}}}"
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
            self.acks.load(Ordering::Relaxed),
            self.failovers.load(Ordering::SeqCst),
            self.state_transfers.load(Ordering::Relaxed),
            self.state_transfer_bytes.load(Ordering::Relaxed),
            self.resumes.load(Ordering::Relaxed),
            crate::vm::progress::latest_json(),
            events,
            unix_ms(),
            json_escape(&last_watchdog),
            self.started.elapsed().as_millis(),
        )
    }
}

/// `s` as the inside of a JSON string (quotes, backslashes and control characters escaped).
pub fn json_escape(s: &str) -> String {
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

    #[test]
    fn going_live_is_a_failover_on_the_timeline_and_held_times_fill_the_histogram() {
        let s = Stats::new(Role::Backup);
        s.set_role(Role::Live);
        s.set_role(Role::Live);
        s.note_state_transfer("10.0.0.2:7001", 4096, 1);
        s.note_held(Duration::from_micros(40));
        s.note_held(Duration::from_secs(5));
        assert_eq!(s.failovers.load(Ordering::SeqCst), 1);
        let kinds: Vec<_> = s.events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["failover", "join"]);
        let h = s.held_histogram();
        assert_eq!((h.counts[0], h.counts[HELD_BUCKETS_US.len()], h.sum_us), (1, 1, 5_000_040));
        let j = s.snapshot();
        assert!(j.contains("\"kind\":\"failover\",\"what\":\"backup went live\""), "{j}");
        assert!(serde_json::from_str::<serde_json::Value>(&j).is_ok(), "{j}");
    }

    #[test]
    fn the_timeline_keeps_the_newest_events() {
        let s = Stats::new(Role::Primary);
        for i in 0..MAX_EVENTS + 5 {
            s.note_resume(&format!("f{i}"), 1);
        }
        let e = s.events();
        assert_eq!(e.len(), MAX_EVENTS);
        assert!(e[0].what.starts_with("f5 "), "{:?}", e[0]);
    }
}
