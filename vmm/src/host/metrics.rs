//! `GET /metrics`: a running VMM's counters in the Prometheus text format (0.0.4).
//!
//! Every family has HELP and TYPE lines; counters end in `_total`, times are in
//! seconds and sizes in bytes, as `promtool check metrics` wants. The group's part
//! (elections, members, per-follower lag) comes from the same JSON the status
//! shows, so the two never disagree.
use super::status::{Role, Stats, HELD_BUCKETS_US};
use serde_json::Value;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// One metric family being written: its name, help and type, then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let _ = write!(self.0, "{}{k}=\"{}\"", if i == 0 { "" } else { "," }, escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The group's JSON members as an object (empty when this VMM is in no group).
fn group_json(stats: &Stats) -> Value {
    let fields = stats.group_fields().unwrap_or_default();
    serde_json::from_str(&format!("{{{}}}", fields.trim_end_matches(','))).unwrap_or(Value::Null)
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Every metric of `stats`, in the Prometheus text format.
pub fn render(stats: &Stats) -> String {
    let mut o = Out(String::with_capacity(4096));
    let snap: Value = serde_json::from_str(&stats.snapshot()).unwrap_or(Value::Null);
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let role = stats.role();
    o.family("ftvmm_role", "gauge", "1 for this VMM's role (standalone, recording, replaying, primary, backup, live).");
    o.sample("ftvmm_role", &[("role", Role::name(role))], 1);
    o.one("ftvmm_epoch", "gauge", "The replication epoch.", num(&snap, "epoch"));
    let protected = u8::from(snap.get("protected").and_then(Value::as_bool).unwrap_or(false));
    o.one(
        "ftvmm_protected",
        "gauge",
        "1 while a follower is in lockstep (or this follower's primary is alive).",
        protected,
    );
    o.one(
        "ftvmm_exits_total",
        "counter",
        "Synchronous VM exits since boot (the exit index).",
        num(&snap, "exit_index"),
    );
    let log_bytes = stats.log_bytes.load(Ordering::Relaxed);
    o.one("ftvmm_log_bytes_total", "counter", "Bytes of log sent to followers.", log_bytes);
    let records = stats.log_records.load(Ordering::Relaxed);
    o.one("ftvmm_log_records_total", "counter", "Log records produced.", records);
    o.one("ftvmm_held_outputs", "gauge", "Outputs held by the Output Rule now.", num(&snap, "held_outputs"));
    let released = stats.outputs_released.load(Ordering::Relaxed);
    o.one("ftvmm_outputs_released_total", "counter", "Outputs released after being held.", released);

    let h = stats.held_histogram();
    let name = "ftvmm_held_time_seconds";
    o.family(name, "histogram", "How long each output was held until the followers had the log up to it.");
    let mut cumulative = 0;
    for (i, bound) in HELD_BUCKETS_US.iter().enumerate() {
        cumulative += h.counts[i];
        o.sample(&format!("{name}_bucket"), &[("le", &secs(*bound).to_string())], cumulative);
    }
    cumulative += h.counts[HELD_BUCKETS_US.len()];
    o.sample(&format!("{name}_bucket"), &[("le", "+Inf")], cumulative);
    o.sample(&format!("{name}_sum"), &[], secs(h.sum_us));
    o.sample(&format!("{name}_count"), &[], cumulative);

    o.one(
        "ftvmm_acks_total",
        "counter",
        "Acknowledgements received from followers.",
        stats.acks.load(Ordering::Relaxed),
    );
    o.one("ftvmm_lag_exits", "gauge", "Exits the least advanced follower has yet to replay.", num(&snap, "lag_exits"));
    let silence = secs(stats.max_peer_silence_us.load(Ordering::Relaxed));
    o.one("ftvmm_max_peer_silence_seconds", "gauge", "Longest silence of the peer on the logging channel.", silence);
    let failovers = stats.failovers.load(Ordering::SeqCst);
    o.one("ftvmm_failovers_total", "counter", "Times this VMM went live in place of its primary.", failovers);
    let transfers = stats.state_transfers.load(Ordering::Relaxed);
    o.one("ftvmm_state_transfers_total", "counter", "Followers that joined by full state transfer.", transfers);
    let bytes = stats.state_transfer_bytes.load(Ordering::Relaxed);
    o.one("ftvmm_state_transfer_bytes_total", "counter", "Bytes sent in state transfers.", bytes);
    let resumes = stats.resumes.load(Ordering::Relaxed);
    o.one("ftvmm_resumes_total", "counter", "Followers that joined by resuming from the backlog.", resumes);
    let trips = stats.watchdog_trips.load(Ordering::SeqCst);
    o.one("ftvmm_watchdog_trips_total", "counter", "Times a watchdog found replication frozen.", trips);
    let stalls = stats.vcpu_stalls.load(Ordering::SeqCst);
    o.one("ftvmm_vcpu_stalls_total", "counter", "Times the vCPU made no progress for the failover timeout.", stalls);
    o.one("ftvmm_uptime_seconds", "gauge", "Seconds since this VMM started.", num(&snap, "uptime_ms") as f64 / 1e3);
    group_metrics(&mut o, &group_json(stats));
    o.0
}

/// The group's metrics: elections, members, and each follower's lag.
fn group_metrics(o: &mut Out, g: &Value) {
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let empty = Vec::new();
    let followers = g.get("followers").and_then(Value::as_array).unwrap_or(&empty);
    o.one("ftvmm_followers", "gauge", "Followers this VMM streams its log to.", followers.len());
    let name = "ftvmm_follower_lag_exits";
    o.family(name, "gauge", "Exits a follower has yet to replay.");
    for f in followers {
        let (id, addr) = (num(f, "id").to_string(), f.get("addr").and_then(Value::as_str).unwrap_or(""));
        let state = f.get("state").and_then(Value::as_str).unwrap_or("");
        o.sample(name, &[("follower", &id), ("addr", addr), ("state", state)], num(f, "lag_exits"));
    }
    let name = "ftvmm_follower_log_bytes_total";
    o.family(name, "counter", "Bytes of log sent to a follower.");
    for f in followers {
        o.sample(name, &[("follower", &num(f, "id").to_string())], num(f, "log_bytes"));
    }
    if g.get("member").is_none() {
        return;
    }
    o.one("ftvmm_elections_won_total", "counter", "Elections this member won.", num(g, "elections_won"));
    o.one("ftvmm_ballot_epoch", "gauge", "The highest epoch this member voted in.", num(g, "ballot_epoch"));
    let name = "ftvmm_member_epoch";
    o.family(name, "gauge", "Each member's epoch and role, as this member last heard.");
    for m in g.get("members").and_then(Value::as_array).unwrap_or(&empty) {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("unknown");
        o.sample(name, &[("member", &num(m, "id").to_string()), ("role", role)], num(m, "epoch"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::status::Role;
    use std::time::Duration;

    #[test]
    fn every_family_has_help_and_type_and_the_histogram_is_cumulative() {
        let s = Stats::new(Role::Primary);
        s.note_held(Duration::from_micros(40));
        s.note_held(Duration::from_micros(700));
        let text = render(&s);
        for family in ["ftvmm_exits_total", "ftvmm_held_time_seconds", "ftvmm_failovers_total", "ftvmm_followers"] {
            assert!(text.contains(&format!("# HELP {family} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{text}");
        }
        assert!(text.contains("ftvmm_held_time_seconds_bucket{le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("ftvmm_held_time_seconds_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("ftvmm_held_time_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("ftvmm_role{role=\"primary\"} 1\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
