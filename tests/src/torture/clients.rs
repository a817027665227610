//! The torture clients: several connections, each one operation at a time, doing
//! GET, SET, INCR, compare-and-set and GETDEL on a few keys and recording every
//! operation with its invocation and completion time (µs since the run began) and
//! its result.
//!
//! ```text
//!   registers r0 r1: 30% GET, 15% SET <unique value>, 25% INCR, 20% CAS, 10% GETDEL
//!   counter   c:     80% INCR, 20% GET           (the lost-INCR check reads it)
//!   no reply within REPLY_LIMIT, a broken connection, an error reply:
//!     the op is indeterminate (no completion, no result); reconnect and go on
//!
//!   CAS, by what the guest can do (CasMode, probed at the start):
//!     SetNx   SET key new NX          compare with "absent" only (GETDEL makes keys
//!                                     absent again): +OK wrote, nil did not
//!     Watch   WATCH key, GET key      compare with the last value this client saw:
//!             equal: MULTI, SET key new, EXEC   *1 wrote; nil array: aborted, a
//!                                     concurrent write came first (not recorded: it
//!                                     wrote nothing and read nothing for certain)
//!             else:  UNWATCH          the CAS failed (the GET is its moment)
//! ```
//!
//! The guest has `SET ... NX` today; `Watch` turns on by itself when it answers
//! `WATCH` (the probe), so the checker sees compare-and-set on any value then.
//!
//! The guest's connections survive a failover, so an indeterminate op is rare: a new
//! primary takes the TCP connection over. A SET's value is unique per run
//! ((client + 1) * 10^9 + sequence), so a read names the write it saw.
use crate::history::{Call, Op, Outcome};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The registers (GET, SET, INCR).
pub const REGISTERS: [&str; 2] = ["r0", "r1"];
/// The counter (INCR and GET only).
pub const COUNTER: &str = "c";
/// How long a client waits for one reply before it calls the op indeterminate.
pub const REPLY_LIMIT: Duration = Duration::from_secs(20);

/// Every key the clients touch.
pub fn keys() -> Vec<&'static str> {
    REGISTERS.iter().copied().chain([COUNTER]).collect()
}

/// A client's small deterministic generator (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// How a compare-and-set is done in the guest (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasMode {
    /// `SET key new NX`: compare with "absent" only.
    SetNx,
    /// `WATCH`/`MULTI`/`EXEC`: compare with any value.
    Watch,
}

impl CasMode {
    /// `Watch` if the guest at `addr` answers `WATCH` with `+OK`, else `SetNx`
    /// (an `-ERR unknown command`, or no answer at all).
    pub fn probe(addr: &str) -> CasMode {
        let Ok(mut c) = Conn::open(addr) else { return CasMode::SetNx };
        let watched = c.command(&["WATCH", "cas-probe"]).is_ok_and(|r| r == "+OK");
        if watched && c.command(&["UNWATCH"]).is_ok_and(|r| r == "+OK") {
            CasMode::Watch
        } else {
            CasMode::SetNx
        }
    }
}

/// What the clients share: the clock, the stop flag and a running count of operations.
#[derive(Clone)]
pub struct Shared {
    pub t0: Instant,
    pub stop: Arc<AtomicBool>,
    pub ops: Arc<AtomicU64>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared { t0: Instant::now(), stop: Arc::new(AtomicBool::new(false)), ops: Arc::new(AtomicU64::new(0)) }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// One connection to the guest (call from inside the client namespace).
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// How [`Call::Cas`] is sent.
    pub cas: CasMode,
}

impl Conn {
    /// Connects within a few seconds, or says why not.
    pub fn open(addr: &str) -> Result<Conn, String> {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(REPLY_LIMIT)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn { writer: s, reader, cas: CasMode::SetNx })
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed by the server".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(format!("receive: {e}")),
        }
    }

    /// Sends one command and reads the first line of its reply.
    fn command(&mut self, args: &[&str]) -> Result<String, String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
        self.line()
    }

    /// A bulk reply's value, read after its header line: `None` for `$-1`.
    fn bulk(&mut self, header: &str) -> Result<Option<i64>, String> {
        match header {
            "$-1" => Ok(None),
            h if h.starts_with('$') => Ok(Some(int(&self.line()?)?)),
            h => Err(format!("unexpected reply {h:?} where a value was due")),
        }
    }

    /// Sends `call` on `key` and reads its reply: `Ok(None)` for a compare-and-set
    /// that a concurrent write aborted (`EXEC` answered nil: nothing was written);
    /// `Err` is a broken connection or a reply that is not the command's (the op is
    /// then indeterminate).
    pub fn run(&mut self, key: &str, call: Call) -> Result<Option<Outcome>, String> {
        let unexpected = |reply: &str| format!("unexpected reply {reply:?} to {call:?} on {key}");
        let outcome = match call {
            Call::Get => Outcome::Read(self.command(&["GET", key]).and_then(|h| self.bulk(&h))?),
            Call::GetDel => Outcome::Read(self.command(&["GETDEL", key]).and_then(|h| self.bulk(&h))?),
            Call::Set(v) => match self.command(&["SET", key, &v.to_string()])? {
                r if r == "+OK" => Outcome::Written,
                r => return Err(unexpected(&r)),
            },
            Call::Incr => match self.command(&["INCR", key])? {
                r if r.starts_with(':') => Outcome::Counted(int(&r[1..])?),
                r => return Err(unexpected(&r)),
            },
            Call::Cas(expect, new) => return self.cas(key, expect, new),
        };
        Ok(Some(outcome))
    }

    fn cas(&mut self, key: &str, expect: Option<i64>, new: i64) -> Result<Option<Outcome>, String> {
        let unexpected = |reply: &str| format!("unexpected reply {reply:?} to a compare-and-set on {key}");
        let new = new.to_string();
        match (self.cas, expect) {
            (CasMode::SetNx, None) => match self.command(&["SET", key, &new, "NX"])? {
                r if r == "+OK" => Ok(Some(Outcome::Cas(true))),
                r if r == "$-1" => Ok(Some(Outcome::Cas(false))),
                r => Err(unexpected(&r)),
            },
            (CasMode::SetNx, Some(_)) => Err("SET NX compares with an absent key only".into()),
            (CasMode::Watch, expect) => {
                let r = self.command(&["WATCH", key])?;
                if r != "+OK" {
                    return Err(unexpected(&r));
                }
                let now = self.command(&["GET", key]).and_then(|h| self.bulk(&h))?;
                if now != expect {
                    let r = self.command(&["UNWATCH"])?;
                    return if r == "+OK" { Ok(Some(Outcome::Cas(false))) } else { Err(unexpected(&r)) };
                }
                for (args, want) in [(vec!["MULTI"], "+OK"), (vec!["SET", key, &new], "+QUEUED")] {
                    let r = self.command(&args)?;
                    if r != want {
                        return Err(unexpected(&r));
                    }
                }
                match self.command(&["EXEC"])?.as_str() {
                    "*-1" => Ok(None),
                    "*1" if self.line()? == "+OK" => Ok(Some(Outcome::Cas(true))),
                    r => Err(unexpected(r)),
                }
            }
        }
    }
}

fn int(s: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|_| format!("not an integer: {s:?}"))
}

/// What one client recorded.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub ops: Vec<Op>,
    /// Why connections broke (each break made one op indeterminate, or failed a connect).
    pub errors: Vec<String>,
    /// Compare-and-sets that `EXEC` aborted (`CasMode::Watch` only): not in `ops`.
    pub cas_aborted: u64,
}

/// What one client knows between operations: its sequence (for unique SET values)
/// and the last value it saw in each register (what a `Watch` CAS expects).
struct Chooser {
    id: usize,
    seq: i64,
    seen: [Option<i64>; REGISTERS.len()],
    cas: CasMode,
}

impl Chooser {
    /// The next operation: see the module's doc for the mix.
    fn next(&mut self, rng: &mut Rng) -> (usize, Call) {
        if rng.below(4) == 0 {
            return (REGISTERS.len(), if rng.below(5) == 0 { Call::Get } else { Call::Incr });
        }
        let k = rng.below(REGISTERS.len() as u64) as usize;
        self.seq += 1;
        let unique = (self.id as i64 + 1) * 1_000_000_000 + self.seq;
        let call = match rng.below(20) {
            0..=5 => Call::Get,
            6..=8 => Call::Set(unique),
            9..=13 => Call::Incr,
            14..=17 => match self.cas {
                CasMode::SetNx => Call::Cas(None, unique),
                CasMode::Watch => Call::Cas(self.seen[k], unique),
            },
            _ => Call::GetDel,
        };
        (k, call)
    }

    /// Remembers what register `k` held after `call` returned `outcome`.
    fn saw(&mut self, k: usize, call: Call, outcome: Outcome) {
        let Some(seen) = self.seen.get_mut(k) else { return };
        match (call, outcome) {
            (Call::GetDel, _) => *seen = None,
            (_, Outcome::Read(v)) => *seen = v,
            (Call::Set(v), _) | (Call::Cas(_, v), Outcome::Cas(true)) => *seen = Some(v),
            (_, Outcome::Counted(n)) => *seen = Some(n),
            _ => {}
        }
    }
}

/// Runs client `id` against `addr` until `shared.stop`; seeded by `seed`.
pub fn run_client(id: usize, addr: &str, seed: u64, cas: CasMode, shared: Shared) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut conn: Option<Conn> = None;
    let mut chooser = Chooser { id, seq: 0, seen: [None; REGISTERS.len()], cas };
    while !shared.stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match Conn::open(addr) {
                Ok(c) => conn = Some(Conn { cas, ..c }),
                Err(e) => {
                    log.errors.push(format!("{:.3}s: {e}", shared.now() as f64 / 1e6));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let (k, call) = chooser.next(&mut rng);
        let key = REGISTERS.get(k).copied().unwrap_or(COUNTER);
        let invoke = shared.now();
        match c.run(key, call) {
            Ok(Some(outcome)) => {
                log.ops.push(Op::done(id, key, call, outcome, invoke, shared.now()));
                chooser.saw(k, call, outcome);
            }
            Ok(None) => log.cas_aborted += 1,
            Err(e) => {
                log.errors.push(format!("{:.3}s: {e}", shared.now() as f64 / 1e6));
                log.ops.push(Op::indeterminate(id, key, call, invoke));
                conn = None;
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
        // Now and then a pause, so that the clients' operations overlap in every way.
        if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(2_000)));
        }
    }
    log
}

/// The clients of a run, each on a thread in the client namespace.
pub struct Clients {
    pub shared: Shared,
    /// How the clients do compare-and-set.
    pub cas: CasMode,
    handles: Vec<std::thread::JoinHandle<ClientLog>>,
}

impl Clients {
    /// Starts `n` clients against the guest, with the compare-and-set the guest can do
    /// ([`CasMode::probe`]).
    pub fn start(topo: &crate::netns::Topology, n: usize, seed: u64, shared: Shared) -> Clients {
        let cas = crate::vm::in_netns(topo, "client", || CasMode::probe(crate::client::GUEST));
        Clients::start_with(topo, n, seed, cas, shared)
    }

    /// [`Clients::start`] with a chosen compare-and-set.
    pub fn start_with(topo: &crate::netns::Topology, n: usize, seed: u64, cas: CasMode, shared: Shared) -> Clients {
        let handles = (0..n)
            .map(|id| {
                let s = shared.clone();
                crate::vm::spawn_in_netns(topo, "client", move || run_client(id, crate::client::GUEST, seed, cas, s))
            })
            .collect();
        Clients { shared, handles, cas }
    }

    /// Stops them and returns what each recorded.
    pub fn stop(self) -> Vec<ClientLog> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.handles.into_iter().map(|h| h.join().expect("a torture client panicked")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_operation_and_cas_follows_the_mode() {
        let mut rng = Rng(5);
        let mut nx = Chooser { id: 0, seq: 0, seen: [None; REGISTERS.len()], cas: CasMode::SetNx };
        let calls: Vec<(usize, Call)> = (0..2_000).map(|_| nx.next(&mut rng)).collect();
        let has = |f: &dyn Fn(&Call) -> bool| calls.iter().any(|(_, c)| f(c));
        assert!(has(&|c| *c == Call::Get) && has(&|c| *c == Call::Incr) && has(&|c| *c == Call::GetDel));
        assert!(has(&|c| matches!(c, Call::Set(_))));
        assert!(calls.iter().all(|(_, c)| !matches!(c, Call::Cas(Some(_), _))), "SET NX compares with absent only");
        assert!(has(&|c| matches!(c, Call::Cas(None, _))));
        assert!(calls.iter().all(|(k, c)| *k < REGISTERS.len() || matches!(c, Call::Get | Call::Incr)));
        // Watch: a CAS expects what the client last saw in that register.
        let mut w = Chooser { id: 1, seq: 0, seen: [None; REGISTERS.len()], cas: CasMode::Watch };
        w.saw(0, Call::Get, Outcome::Read(Some(41)));
        w.saw(1, Call::Incr, Outcome::Counted(7));
        let cas: Vec<(usize, Call)> =
            (0..2_000).map(|_| w.next(&mut rng)).filter(|(_, c)| matches!(c, Call::Cas(..))).collect();
        assert!(cas.iter().any(|&(k, c)| k == 0 && matches!(c, Call::Cas(Some(41), _))), "{cas:?}");
        assert!(cas.iter().all(|&(k, c)| k != 1 || matches!(c, Call::Cas(Some(7), _))), "{cas:?}");
        w.saw(0, Call::GetDel, Outcome::Read(Some(3)));
        assert_eq!(w.seen[0], None, "GETDEL empties");
        w.saw(0, Call::Cas(None, 9), Outcome::Cas(true));
        assert_eq!(w.seen[0], Some(9));
        w.saw(0, Call::Cas(Some(9), 10), Outcome::Cas(false));
        assert_eq!(w.seen[0], Some(9), "a failed CAS tells nothing new");
    }
}
