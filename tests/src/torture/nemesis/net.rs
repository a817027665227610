//! The nemesis's network faults, made in the `lan` namespace (the switch), so that
//! no member's own namespace is touched:
//!
//! ```text
//!   one-way cut   nft, bridge family, forward hook of sw0:
//!                   "iifname host-a drop"                  host-a's sends go nowhere
//!                   "oifname host-a drop"                  host-a hears nothing
//!                   "iifname host-a oifname host-b drop"   only host-a -> host-b is lost
//!   slow link     tc on the switch's port to a member: netem delay where the kernel
//!                 has it, else a token bucket (1 Mbit/s) whose queue is the delay
//! ```
//!
//! A cut drops silently (no ICMP, no RST): TCP connections across it see a peer that
//! stopped answering, as on a real one-way failure. `heal` undoes every one of them.
use crate::netns::Topology;

/// The nft table the one-way cuts live in (in the `lan` namespace).
pub const TABLE: &str = "nemesis";

/// A one-way cut: what `from` sends (to `to`, or to anyone) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneWay {
    /// The sending host (`None`: any host).
    pub from: Option<&'static str>,
    /// The receiving host (`None`: any host).
    pub to: Option<&'static str>,
}

impl OneWay {
    /// The nft rule's match (without the verdict).
    pub fn rule(&self) -> String {
        let mut m = Vec::new();
        if let Some(f) = self.from {
            m.push(format!("iifname \"{f}\""));
        }
        if let Some(t) = self.to {
            m.push(format!("oifname \"{t}\""));
        }
        m.join(" ")
    }

    /// For the fault log.
    pub fn describe(&self) -> String {
        match (self.from, self.to) {
            (Some(f), Some(t)) => format!("{f} -> {t} dropped (the other way open)"),
            (Some(f), None) => format!("everything {f} sends dropped (it still hears everyone)"),
            (None, Some(t)) => format!("everything sent to {t} dropped (it can still send)"),
            (None, None) => "nothing".into(),
        }
    }
}

fn nft(topo: &Topology, script: &str) -> Result<(), String> {
    let out = topo.command("lan", "nft").arg(script).output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft {script:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Drops what `cut` names, until [`heal`]. A rule that matches nothing (both ends
/// `None`) is refused: it would cut the whole switch.
pub fn cut(topo: &Topology, cut: OneWay) -> Result<(), String> {
    if cut.from.is_none() && cut.to.is_none() {
        return Err("a one-way cut needs a sender or a receiver".into());
    }
    nft(
        topo,
        &format!(
            "add table bridge {TABLE}; add chain bridge {TABLE} cut {{ type filter hook forward priority 0; policy accept; }}; \
             add rule bridge {TABLE} cut {} drop",
            cut.rule()
        ),
    )
}

/// Removes every one-way cut (no error if there is none).
pub fn heal(topo: &Topology) {
    // "add" first makes the delete succeed whether or not the table existed.
    let _ = nft(topo, &format!("add table bridge {TABLE}; delete table bridge {TABLE}"));
}

/// Slows what `host` receives (`ms` = 0 undoes it), on the switch's port to it in the
/// lan namespace, so a follower's log arrives late while the clients' replies do not
/// wait: a netem delay of `ms`, or where the kernel has no netem, a token bucket
/// (1 Mbit/s, queueing up to 4 x `ms`). Returns which, or `None` if `tc` could do neither.
pub fn slow(topo: &Topology, host: &str, ms: u64) -> Option<&'static str> {
    let tc = |args: &[&str]| topo.command("lan", "tc").args(args).output().is_ok_and(|o| o.status.success());
    if ms == 0 {
        return tc(&["qdisc", "del", "dev", host, "root"]).then_some("none");
    }
    let delay = format!("{ms}ms");
    if tc(&["qdisc", "replace", "dev", host, "root", "netem", "delay", &delay]) {
        return Some("netem");
    }
    let latency = format!("{}ms", ms * 4);
    tc(&["qdisc", "replace", "dev", host, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", &latency])
        .then_some("tbf 1mbit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_rules_name_the_direction() {
        let c = OneWay { from: Some("host-a"), to: Some("host-b") };
        assert_eq!(c.rule(), "iifname \"host-a\" oifname \"host-b\"");
        assert!(c.describe().contains("host-a -> host-b"));
        assert_eq!(OneWay { from: None, to: Some("host-c") }.rule(), "oifname \"host-c\"");
        assert_eq!(OneWay { from: Some("host-c"), to: None }.rule(), "iifname \"host-c\"");
    }
}
