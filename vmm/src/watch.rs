//! `ftvmm status ADDR --watch`: one line a second, like the demo's, until interrupted.
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// UTC wall-clock time as HH:MM:SS.
fn clock() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// One line describing `now`, with rates since `before` (`secs` apart).
pub fn line(now: &Value, before: Option<&Value>, secs: f64) -> String {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rate = |k: &str| before.map_or(0.0, |b| n(now, k).saturating_sub(n(b, k)) as f64 / secs.max(1e-3));
    let role = match now.get("member_role").and_then(Value::as_str) {
        Some(m) => format!("member {} {m}", n(now, "member")),
        None => now.get("role").and_then(Value::as_str).unwrap_or("?").to_string(),
    };
    let followers = now.get("followers").and_then(Value::as_array).map_or(0, Vec::len);
    let protected =
        if now.get("protected").and_then(Value::as_bool) == Some(true) { "protected" } else { "UNPROTECTED" };
    format!(
        "{role:<18} epoch {:<3} {protected:<11} followers {followers}  {:>9.0} exits/s  lag {:>6} exits  \
         held {} p50 {:.2} ms p99 {:.2} ms  log {:>8.1} KiB/s  failovers {}",
        n(now, "epoch"),
        rate("exit_index"),
        n(now, "lag_exits"),
        n(now, "held_outputs"),
        n(now, "held_p50_us") as f64 / 1e3,
        n(now, "held_p99_us") as f64 / 1e3,
        rate("log_bytes") / 1024.0,
        n(now, "failovers"),
    )
}

/// Prints a line a second for `addr` until interrupted; an unreachable VMM is a line too.
pub fn run(addr: &str) -> ExitCode {
    let mut before: Option<(Value, Instant)> = None;
    loop {
        let t0 = Instant::now();
        match vmm::host::http::fetch(addr, "/status", Duration::from_secs(1)) {
            Ok(json) => match serde_json::from_str::<Value>(&json) {
                Ok(now) => {
                    let secs = before.as_ref().map_or(1.0, |(_, t)| t.elapsed().as_secs_f64());
                    println!("{} {}", clock(), line(&now, before.as_ref().map(|(b, _)| b), secs));
                    before = Some((now, Instant::now()));
                }
                Err(e) => println!("{} not a status object ({e})", clock()),
            },
            Err(e) => {
                println!("{} cannot read the status at {addr}: {e}", clock());
                before = None;
            }
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_role_rates_and_lag() {
        let before = serde_json::json!({"role":"primary","exit_index":1000,"log_bytes":0});
        let now = serde_json::json!({"role":"primary","epoch":2,"protected":true,"exit_index":3000,
            "log_bytes":2048,"lag_exits":7,"held_p50_us":250,"held_p99_us":1500,"followers":[{},{}]});
        let l = line(&now, Some(&before), 2.0);
        assert!(l.starts_with("primary "), "{l}");
        for part in [
            "epoch 2",
            "protected",
            "followers 2",
            "1000 exits/s",
            "lag      7",
            "p50 0.25 ms",
            "p99 1.50 ms",
            "1.0 KiB/s",
        ] {
            assert!(l.contains(part), "{part:?} missing in {l}");
        }
    }
}
