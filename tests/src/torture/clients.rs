//! The torture clients: several connections, each one operation at a time, doing
//! GET, SET and INCR on a few keys and recording every operation with its invocation
//! and completion time (µs since the run began) and its result.
//!
//! ```text
//!   registers r0 r1: 40% GET, 20% SET <unique value>, 40% INCR
//!   counter   c:     80% INCR, 20% GET           (the lost-INCR check reads it)
//!   no reply within REPLY_LIMIT, a broken connection, an error reply:
//!     the op is indeterminate (no completion, no result); reconnect and go on
//! ```
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
}

impl Conn {
    /// Connects within a few seconds, or says why not.
    pub fn open(addr: &str) -> Result<Conn, String> {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(REPLY_LIMIT)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn { writer: s, reader })
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed by the server".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(format!("receive: {e}")),
        }
    }

    /// Sends `call` on `key` and reads its reply: `Err` is a broken connection or a reply
    /// that is not the command's (the op is then indeterminate).
    pub fn run(&mut self, key: &str, call: Call) -> Result<Outcome, String> {
        let args: Vec<String> = match call {
            Call::Get => vec!["GET".into(), key.into()],
            Call::Set(v) => vec!["SET".into(), key.into(), v.to_string()],
            Call::Incr => vec!["INCR".into(), key.into()],
        };
        let mut req = format!("*{}\r\n", args.len());
        for a in &args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
        let reply = self.line()?;
        let int = |s: &str| s.parse::<i64>().map_err(|_| format!("not an integer: {s:?}"));
        match (call, reply.as_bytes().first()) {
            (Call::Get, Some(b'$')) if reply == "$-1" => Ok(Outcome::Read(None)),
            (Call::Get, Some(b'$')) => Ok(Outcome::Read(Some(int(&self.line()?)?))),
            (Call::Set(_), _) if reply == "+OK" => Ok(Outcome::Written),
            (Call::Incr, Some(b':')) => Ok(Outcome::Counted(int(&reply[1..])?)),
            _ => Err(format!("unexpected reply {reply:?} to {args:?}")),
        }
    }
}

/// What one client recorded.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub ops: Vec<Op>,
    /// Why connections broke (each break made one op indeterminate, or failed a connect).
    pub errors: Vec<String>,
}

/// Runs client `id` against `addr` until `shared.stop`; seeded by `seed`.
pub fn run_client(id: usize, addr: &str, seed: u64, shared: Shared) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut conn: Option<Conn> = None;
    let mut seq = 0i64;
    while !shared.stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match Conn::open(addr) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    log.errors.push(format!("{:.3}s: {e}", shared.now() as f64 / 1e6));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let (key, call) = if rng.below(4) == 0 {
            (COUNTER, if rng.below(5) == 0 { Call::Get } else { Call::Incr })
        } else {
            let key = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
            seq += 1;
            let call = match rng.below(5) {
                0 | 1 => Call::Get,
                2 => Call::Set((id as i64 + 1) * 1_000_000_000 + seq),
                _ => Call::Incr,
            };
            (key, call)
        };
        let invoke = shared.now();
        match c.run(key, call) {
            Ok(outcome) => log.ops.push(Op::done(id, key, call, outcome, invoke, shared.now())),
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
    handles: Vec<std::thread::JoinHandle<ClientLog>>,
}

impl Clients {
    /// Starts `n` clients against the guest.
    pub fn start(topo: &crate::netns::Topology, n: usize, seed: u64, shared: Shared) -> Clients {
        let handles = (0..n)
            .map(|id| {
                let s = shared.clone();
                crate::vm::spawn_in_netns(topo, "client", move || run_client(id, crate::client::GUEST, seed, s))
            })
            .collect();
        Clients { shared, handles }
    }

    /// Stops them and returns what each recorded.
    pub fn stop(self) -> Vec<ClientLog> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.handles.into_iter().map(|h| h.join().expect("a torture client panicked")).collect()
    }
}
