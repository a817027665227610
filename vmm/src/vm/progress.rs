//! Progress of the long operations — state and diff transfers (both sides),
//! checkpoint restores — as log lines: one every [`EVERY`] while it runs and
//! a summary when it ends, with bytes, pages and rate as fields (so the JSON
//! log format carries them as keys). The latest of each kind is kept for
//! `/status` (`"progress"`).
//!
//! ```text
//!   state transfer sent: 12.0 MiB of 64.0 MiB (18%), 3072 pages, 45.2 MiB/s   (every second)
//!   state transfer sent: done, 20.1 MiB, 5140 pages in 310 ms (64.8 MiB/s)       (the summary)
//! ```
//! Catch-up (a follower replaying behind its primary) is counted in exits, not
//! bytes: `ft::catchup`.
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a running operation logs its progress.
pub const EVERY: Duration = Duration::from_secs(1);

/// The most operations `/status` remembers (one per kind; there are a handful).
const MAX_KEPT: usize = 8;

/// The latest report of each kind of operation, for `/status`.
static LATEST: Mutex<Vec<Report>> = Mutex::new(Vec::new());

/// Where an operation is.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What it is ("state transfer sent", "checkpoint restore", ...).
    pub op: &'static str,
    /// Bytes of state (for a transfer: before packing).
    pub bytes: u64,
    /// For a transfer that packs what it sends: the bytes that went on the wire.
    pub wire_bytes: Option<u64>,
    pub pages: u64,
    /// The bytes it will reach, when known.
    pub total_bytes: Option<u64>,
    pub elapsed: Duration,
    pub done: bool,
}

impl Report {
    /// MiB per second so far.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }

    /// Percent of `total_bytes`, when known.
    pub fn percent(&self) -> Option<u64> {
        self.total_bytes.filter(|t| *t > 0).map(|t| (self.bytes.min(t) * 100) / t)
    }

    /// The line a person reads.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut out = format!("{}: ", self.op);
        if self.done {
            let _ = write!(out, "done, {:.1} MiB", mib(self.bytes));
            self.wire_part(&mut out);
            let _ = write!(
                out,
                ", {} pages in {} ms ({:.1} MiB/s)",
                self.pages,
                self.elapsed.as_millis(),
                self.mib_per_s()
            );
            return out;
        }
        let _ = write!(out, "{:.1} MiB", mib(self.bytes));
        if let (Some(total), Some(pct)) = (self.total_bytes, self.percent()) {
            let _ = write!(out, " of {:.1} MiB ({pct}%)", mib(total));
        }
        self.wire_part(&mut out);
        let _ = write!(out, ", {} pages, {:.1} MiB/s", self.pages, self.mib_per_s());
        out
    }

    /// " (0.1 MiB on the wire)", for a transfer that packs what it sends.
    fn wire_part(&self, out: &mut String) {
        if let Some(w) = self.wire_bytes {
            let _ = write!(out, " ({:.2} MiB on the wire)", w as f64 / (1 << 20) as f64);
        }
    }

    /// One JSON object, for `/status`.
    pub fn json(&self) -> String {
        format!(
            "{{\"op\":\"{}\",\"bytes\":{},\"wire_bytes\":{},\"pages\":{},\"total_bytes\":{},\"elapsed_ms\":{},\"mib_per_s\":{:.1},\"done\":{}}}",
            self.op,
            self.bytes,
            self.wire_bytes.map_or("null".to_string(), |t| t.to_string()),
            self.pages,
            self.total_bytes.map_or("null".to_string(), |t| t.to_string()),
            self.elapsed.as_millis(),
            self.mib_per_s(),
            self.done
        )
    }
}

/// The latest report of each kind, as a JSON array (for `/status`).
pub fn latest_json() -> String {
    let kept = LATEST.lock().unwrap_or_else(|p| p.into_inner());
    format!("[{}]", kept.iter().map(Report::json).collect::<Vec<_>>().join(","))
}

fn publish(report: &Report) {
    let mut kept = LATEST.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|r| r.op != report.op);
    kept.push(report.clone());
    while kept.len() > MAX_KEPT {
        kept.remove(0);
    }
}

/// One running operation.
#[derive(Debug)]
pub struct Progress {
    op: &'static str,
    started: Instant,
    last: Instant,
    total_bytes: Option<u64>,
    bytes: u64,
    wire_bytes: Option<u64>,
    pages: u64,
}

impl Progress {
    /// Starts counting `op`, which will reach `total_bytes` if that is known.
    pub fn start(op: &'static str, total_bytes: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress { op, started: now, last: now, total_bytes, bytes: 0, wire_bytes: None, pages: 0 }
    }

    /// A transfer that packs what it sends has put this many bytes on the wire (call
    /// before [`Progress::set`], which logs).
    pub fn set_wire(&mut self, wire_bytes: u64) {
        self.wire_bytes = Some(wire_bytes);
    }

    /// The operation has got this far; logs a line if [`EVERY`] has passed since the last.
    pub fn set(&mut self, bytes: u64, pages: u64) {
        self.bytes = bytes;
        self.pages = pages;
        if let Some(report) = self.due(Instant::now()) {
            log(&report);
            publish(&report);
        }
    }

    /// The report to log at `now`, if one is due (pure, for tests).
    fn due(&mut self, now: Instant) -> Option<Report> {
        if now.saturating_duration_since(self.last) < EVERY {
            return None;
        }
        self.last = now;
        Some(self.report(now, false))
    }

    fn report(&self, now: Instant, done: bool) -> Report {
        Report {
            op: self.op,
            bytes: self.bytes,
            wire_bytes: self.wire_bytes,
            pages: self.pages,
            total_bytes: self.total_bytes,
            elapsed: now.saturating_duration_since(self.started),
            done,
        }
    }

    /// Logs the summary and returns it.
    pub fn finish(self) -> Report {
        let report = self.report(Instant::now(), true);
        log(&report);
        publish(&report);
        report
    }
}

fn log(r: &Report) {
    tracing::info!(
        progress = r.op,
        bytes = r.bytes,
        wire_bytes = r.wire_bytes,
        pages = r.pages,
        total_bytes = r.total_bytes,
        percent = r.percent(),
        mib_per_s = format!("{:.1}", r.mib_per_s()),
        elapsed_ms = r.elapsed.as_millis() as u64,
        done = r.done,
        "{}",
        r.line()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_due_once_a_second_not_more_often() {
        let mut p = Progress::start("state transfer sent", Some(64 << 20));
        let t0 = p.started;
        p.bytes = 8 << 20;
        p.pages = 2048;
        assert_eq!(p.due(t0 + Duration::from_millis(999)), None, "before the interval: nothing");
        let r = p.due(t0 + EVERY).expect("at the interval: a line");
        assert_eq!((r.bytes, r.pages, r.percent(), r.done), (8 << 20, 2048, Some(12), false));
        assert!((r.mib_per_s() - 8.0).abs() < 0.01, "{}", r.mib_per_s());
        assert_eq!(p.due(t0 + EVERY + Duration::from_millis(500)), None, "the next only a second after that");
        assert!(p.due(t0 + EVERY * 2).is_some());
        assert_eq!(r.line(), "state transfer sent: 8.0 MiB of 64.0 MiB (12%), 2048 pages, 8.0 MiB/s");
    }

    #[test]
    fn the_summary_and_the_status_json_say_what_was_done() {
        let mut p = Progress::start("checkpoint restore (test)", None);
        p.set(3 << 20, 768);
        let r = p.finish();
        assert!(
            r.done && r.line().starts_with("checkpoint restore (test): done, 3.0 MiB, 768 pages in "),
            "{}",
            r.line()
        );
        // The report as /status shows it (the list itself is shared with tests running
        // beside this one, which may push it out).
        let mine: serde_json::Value = serde_json::from_str(&r.json()).expect("JSON");
        assert_eq!(
            (mine["bytes"].as_u64(), mine["pages"].as_u64(), mine["done"].as_bool()),
            (Some(3 << 20), Some(768), Some(true))
        );
        assert!(serde_json::from_str::<serde_json::Value>(&latest_json()).expect("JSON").is_array());
        assert!(mine["total_bytes"].is_null() && mine["wire_bytes"].is_null());
    }

    #[test]
    fn a_packed_transfer_says_what_went_on_the_wire() {
        let mut p = Progress::start("state transfer sent (test)", None);
        p.set_wire(1 << 19);
        p.set(4 << 20, 1024);
        let r = p.finish();
        assert!(r.line().starts_with("state transfer sent (test): done, 4.0 MiB (0.50 MiB on the wire), 1024 pages"));
        let mine: serde_json::Value = serde_json::from_str(&r.json()).expect("JSON");
        assert_eq!((mine["bytes"].as_u64(), mine["wire_bytes"].as_u64()), (Some(4 << 20), Some(1 << 19)));
    }

    #[test]
    fn status_keeps_one_report_per_kind_and_at_most_the_limit() {
        const OPS: [&str; MAX_KEPT + 3] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"];
        for op in OPS {
            Progress::start(op, None).finish();
            Progress::start(op, None).finish();
        }
        let kept = LATEST.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(kept.len() <= MAX_KEPT, "{}", kept.len());
        assert_eq!(kept.iter().filter(|r| r.op == "k10").count(), 1, "one per kind, the latest");
    }
}
