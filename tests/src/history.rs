//! A client-visible history of key-value operations, as the torture clients record it
//! and the linearizability checker ([`crate::linear`]) reads it.
//!
//! ```text
//!   one line per operation (the history file):
//!   <client> <key> <invoke-us> <complete-us|?> <call> -> <result>
//!   3 k1 1200 1450 INCR -> 7
//!   1 k0 1300 ? SET 1000042 -> ?          (indeterminate: the connection broke)
//!   2 k1 1500 1710 GET -> nil
//!   0 r0 1800 1990 CAS nil 2000000007 -> ok   (compare-and-set: was absent, now 2000000007)
//!   1 r0 1850 2020 CAS 5 3000000001 -> fail   (the value was not 5: nothing written)
//!   3 r1 2100 2300 GETDEL -> 42               (read and deleted in one step)
//! ```
//!
//! Times are microseconds since the run began, on the one clock every client reads.
//! An operation whose connection broke (or whose reply never came) is
//! *indeterminate*: it may or may not have taken effect, and it has no completion
//! time — Knossos's `:info`.
use std::fmt;

/// What a client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `GET key`.
    Get,
    /// `SET key value`.
    Set(i64),
    /// `INCR key`.
    Incr,
    /// Compare-and-set: if the value is the first (`None`: the key is absent), replace
    /// it with the second; otherwise change nothing. `SET key new NX` does the `None`
    /// case in the guest today; `WATCH`/`MULTI`/`EXEC` would do any value
    /// (`crate::torture::clients::CasMode`).
    Cas(Option<i64>, i64),
    /// `GETDEL key`: reads the value and deletes the key in one step (so that a
    /// compare-and-set from absent can succeed again).
    GetDel,
}

/// What it got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A GET's value (`None`: the key did not exist).
    Read(Option<i64>),
    /// A SET's `+OK`.
    Written,
    /// An INCR's new value.
    Counted(i64),
    /// A compare-and-set's verdict: `true` it wrote, `false` the value differed.
    Cas(bool),
    /// No reply: the operation may or may not have taken effect.
    Unknown,
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Which client connection issued it.
    pub client: usize,
    /// The key it touched.
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    /// When the request was sent (µs since the start).
    pub invoke: u64,
    /// When the reply arrived; `None` for an indeterminate operation.
    pub complete: Option<u64>,
}

impl Op {
    /// An operation that completed with `outcome`.
    pub fn done(client: usize, key: &str, call: Call, outcome: Outcome, invoke: u64, complete: u64) -> Op {
        Op { client, key: key.to_string(), call, outcome, invoke, complete: Some(complete) }
    }

    /// An operation whose reply never came.
    pub fn indeterminate(client: usize, key: &str, call: Call, invoke: u64) -> Op {
        Op { client, key: key.to_string(), call, outcome: Outcome::Unknown, invoke, complete: None }
    }

    /// Whether it is indeterminate.
    pub fn is_unknown(&self) -> bool {
        self.outcome == Outcome::Unknown
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let complete = self.complete.map_or("?".to_string(), |c| c.to_string());
        write!(f, "{} {} {} {} ", self.client, self.key, self.invoke, complete)?;
        match self.call {
            Call::Get => write!(f, "GET")?,
            Call::Set(v) => write!(f, "SET {v}")?,
            Call::Incr => write!(f, "INCR")?,
            Call::Cas(None, v) => write!(f, "CAS nil {v}")?,
            Call::Cas(Some(e), v) => write!(f, "CAS {e} {v}")?,
            Call::GetDel => write!(f, "GETDEL")?,
        }
        match self.outcome {
            Outcome::Read(None) => write!(f, " -> nil"),
            Outcome::Read(Some(v)) | Outcome::Counted(v) => write!(f, " -> {v}"),
            Outcome::Written => write!(f, " -> OK"),
            Outcome::Cas(true) => write!(f, " -> ok"),
            Outcome::Cas(false) => write!(f, " -> fail"),
            Outcome::Unknown => write!(f, " -> ?"),
        }
    }
}

/// Parses one line written by `Display` (for rechecking a saved history).
pub fn parse_line(line: &str) -> Result<Op, String> {
    let bad = || format!("not a history line: {line:?}");
    let (lhs, result) = line.split_once(" -> ").ok_or_else(bad)?;
    let w: Vec<&str> = lhs.split_whitespace().collect();
    if w.len() < 5 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let client = w[0].parse().map_err(|_| bad())?;
    let invoke = w[2].parse().map_err(|_| bad())?;
    let complete = if w[3] == "?" { None } else { Some(w[3].parse().map_err(|_| bad())?) };
    let call = match (w[4], w.get(5)) {
        ("GET", None) => Call::Get,
        ("INCR", None) => Call::Incr,
        ("SET", Some(v)) if w.len() == 6 => Call::Set(num(v)?),
        ("GETDEL", None) => Call::GetDel,
        ("CAS", Some(e)) if w.len() == 7 => {
            let expect = if *e == "nil" { None } else { Some(num(e)?) };
            Call::Cas(expect, num(w[6])?)
        }
        _ => return Err(bad()),
    };
    let outcome = match (call, result.trim()) {
        (_, "?") => Outcome::Unknown,
        (Call::Get | Call::GetDel, "nil") => Outcome::Read(None),
        (Call::Get | Call::GetDel, v) => Outcome::Read(Some(num(v)?)),
        (Call::Cas(..), "ok") => Outcome::Cas(true),
        (Call::Cas(..), "fail") => Outcome::Cas(false),
        (Call::Set(_), "OK") => Outcome::Written,
        (Call::Incr, v) => Outcome::Counted(num(v)?),
        _ => return Err(bad()),
    };
    if complete.is_none() != (outcome == Outcome::Unknown) {
        return Err(bad());
    }
    Ok(Op { client, key: w[1].to_string(), call, outcome, invoke, complete })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_line_reads_back_as_written() {
        let ops = [
            Op::done(3, "k1", Call::Incr, Outcome::Counted(7), 1200, 1450),
            Op::indeterminate(1, "k0", Call::Set(1000042), 1300),
            Op::done(2, "k1", Call::Get, Outcome::Read(None), 1500, 1710),
            Op::done(2, "k1", Call::Get, Outcome::Read(Some(-4)), 1800, 1900),
            Op::done(0, "k2", Call::Set(5), Outcome::Written, 1, 2),
            Op::done(0, "r0", Call::Cas(None, 2000000007), Outcome::Cas(true), 1800, 1990),
            Op::done(1, "r0", Call::Cas(Some(-5), 3), Outcome::Cas(false), 1850, 2020),
            Op::indeterminate(1, "r0", Call::Cas(Some(5), 3), 1850),
            Op::done(3, "r1", Call::GetDel, Outcome::Read(Some(42)), 2100, 2300),
            Op::done(3, "r1", Call::GetDel, Outcome::Read(None), 2400, 2500),
        ];
        for op in ops {
            assert_eq!(parse_line(&op.to_string()), Ok(op.clone()), "{op}");
        }
        assert_eq!(ops_line(), "1 k0 1300 ? SET 1000042 -> ?");
        assert!(parse_line("1 k0 1300 ? SET 5 -> OK").is_err(), "a completion time goes with a result");
        assert!(parse_line("1 k0 1300 1400 GET -> OK").is_err());
        assert_eq!(
            parse_line("0 r0 1800 1990 CAS nil 2000000007 -> ok").map(|o| o.call),
            Ok(Call::Cas(None, 2000000007))
        );
        assert!(parse_line("1 k0 1300 1400 CAS 5 -> ok").is_err(), "a CAS names the expected and the new value");
        assert!(parse_line("1 k0 1300 1400 CAS 5 6 7 -> ok").is_err());
        assert!(parse_line("1 k0 1300 1400 CAS 5 6 -> OK").is_err(), "a CAS says ok or fail");
        assert!(parse_line("1 k0 1300 1400 SET 5 6 -> OK").is_err());
    }

    fn ops_line() -> String {
        Op::indeterminate(1, "k0", Call::Set(1000042), 1300).to_string()
    }
}
