//! `ftvmm-relay`: a TCP relay that adds latency, and optionally damage, to the stream it carries.
//!
//! The test machines have no `tc netem`, so link delay is simulated here in user space. Each accepted
//! connection on `--listen` gets its own connection to `--connect`; bytes are relayed both ways.
//! "down" is from the `--connect` side to the `--listen` side, "up" the other way.
//!
//! Per direction there is a reader thread and a writer thread with a channel between them: the reader
//! timestamps every chunk it reads, the writer sends it no earlier than that time plus the delay. So
//! the delay adds latency without limiting throughput (the channel is unbounded: a slow receiver makes
//! the relay buffer, not the sender block).
//!
//! End of stream is passed on as a half-close (`shutdown(Write)` on the other socket once everything
//! read before it has been delivered); a read or write error shuts down both sockets of the pair.
use clap::Parser;
use crossbeam_channel::{Receiver, Sender};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread::{self, Scope};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// The most one read takes from a socket; one chunk in the channel.
const CHUNK: usize = 64 * 1024;
/// How long to wait for `--connect` to accept before giving up on that connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest delay accepted, so that `read time + delay` cannot overflow.
const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Parser)]
#[command(
    name = "ftvmm-relay",
    version,
    about = "A TCP relay that delays (and optionally corrupts or truncates) the streams it carries"
)]
struct Cli {
    /// Address to accept connections on. Port 0 picks a free port; the line printed names it.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Address to connect to for each accepted connection.
    #[arg(long, value_name = "ADDR:PORT")]
    connect: SocketAddr,
    /// Delay, in milliseconds, added to both directions.
    #[arg(long, value_name = "MS", default_value = "0", value_parser = parse_delay)]
    delay_ms: Duration,
    /// Delay for the up direction (--listen side to --connect side); overrides --delay-ms.
    #[arg(long, value_name = "MS", value_parser = parse_delay)]
    delay_up_ms: Option<Duration>,
    /// Delay for the down direction (--connect side to --listen side); overrides --delay-ms.
    #[arg(long, value_name = "MS", value_parser = parse_delay)]
    delay_down_ms: Option<Duration>,
    /// Flip (xor 0xff) the byte at this offset (from 0) of each connection's down stream.
    #[arg(long, value_name = "N")]
    corrupt_down_after: Option<u64>,
    /// Forward only this many bytes of each connection's down stream, then nothing more (the
    /// connection stays open).
    #[arg(long, value_name = "N")]
    truncate_down_after: Option<u64>,
}

/// Milliseconds, fractions allowed (0.5 is 500 µs), at most `MAX_DELAY_MS`.
fn parse_delay(s: &str) -> Result<Duration, String> {
    let ms: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if !(0.0..=MAX_DELAY_MS as f64).contains(&ms) {
        return Err(format!("delay must be between 0 and {MAX_DELAY_MS} ms"));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// Damage done to one direction of a connection, by stream offset.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Tamper {
    /// Offset of the one byte to flip.
    corrupt_at: Option<u64>,
    /// Number of bytes to forward before forwarding stops.
    truncate_after: Option<u64>,
}

impl Tamper {
    /// Damages `chunk`, which starts at stream offset `pos`, and returns how many of its leading bytes
    /// to forward.
    fn apply(&self, pos: u64, chunk: &mut [u8]) -> usize {
        let len = chunk.len() as u64;
        if let Some(at) = self.corrupt_at {
            if at >= pos && at - pos < len {
                chunk[(at - pos) as usize] ^= 0xff;
            }
        }
        match self.truncate_after {
            Some(limit) => limit.saturating_sub(pos).min(len) as usize,
            None => chunk.len(),
        }
    }
}

/// What every connection is relayed with.
#[derive(Clone, Copy, Debug)]
struct Config {
    connect: SocketAddr,
    up_delay: Duration,
    down_delay: Duration,
    down_tamper: Tamper,
}

/// A chunk read from one socket and the time it was read.
type Timed = (Instant, Vec<u8>);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FTVMM_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let config = Config {
        connect: cli.connect,
        up_delay: cli.delay_up_ms.unwrap_or(cli.delay_ms),
        down_delay: cli.delay_down_ms.unwrap_or(cli.delay_ms),
        down_tamper: Tamper { corrupt_at: cli.corrupt_down_after, truncate_after: cli.truncate_down_after },
    };
    let listener = match TcpListener::bind(cli.listen) {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen on {}: {err}", cli.listen);
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(cli.listen);
    println!(
        "relay listening on {local} -> {} (up delay {} ms, down delay {} ms)",
        config.connect,
        config.up_delay.as_secs_f64() * 1e3,
        config.down_delay.as_secs_f64() * 1e3
    );
    // Tests wait for that line; a failed flush means nobody is reading stdout, which is no reason to stop.
    let _ = std::io::stdout().flush();

    for accepted in listener.incoming() {
        match accepted {
            Ok(client) => {
                let spawned = thread::Builder::new().name("relay-conn".into()).spawn(move || serve(client, config));
                if let Err(err) = spawned {
                    error!("cannot start a thread for a connection: {err}");
                }
            }
            Err(err) => {
                warn!("accept failed: {err}");
                // Out of descriptors and the like: don't spin while it lasts.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ExitCode::SUCCESS
}

/// Relays one accepted connection until both directions have ended.
fn serve(client: TcpStream, config: Config) {
    let peer = client.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    if let Err(err) = client.set_nodelay(true) {
        warn!("{peer}: cannot set TCP_NODELAY: {err}");
    }
    let server = match TcpStream::connect_timeout(&config.connect, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(err) => {
            warn!("{peer}: cannot connect to {}: {err}; dropping the connection", config.connect);
            return;
        }
    };
    if let Err(err) = server.set_nodelay(true) {
        warn!("{peer}: cannot set TCP_NODELAY on the connection to {}: {err}", config.connect);
    }
    info!("{peer}: relaying to {}", config.connect);

    let (client, server) = (&client, &server);
    let abort = move || {
        // Either may already be shut down or reset; nothing more to do about it.
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    };
    thread::scope(|s| {
        pump(s, client, server, config.up_delay, Tamper::default(), abort);
        pump(s, server, client, config.down_delay, config.down_tamper, abort);
    });
    info!("{peer}: closed");
}

/// Starts the reader and writer threads that carry `from` to `to`, `delay` late.
fn pump<'scope, A>(
    s: &'scope Scope<'scope, '_>,
    from: &'scope TcpStream,
    to: &'scope TcpStream,
    delay: Duration,
    tamper: Tamper,
    abort: A,
) where
    A: Fn() + Copy + Send + 'scope,
{
    let (tx, rx) = crossbeam_channel::unbounded();
    s.spawn(move || read_chunks(from, &tx, abort));
    s.spawn(move || write_chunks(to, &rx, delay, tamper, abort));
}

/// Reads `from` into timestamped chunks until end of stream, an error, or the writer giving up.
fn read_chunks(mut from: &TcpStream, tx: &Sender<Timed>, abort: impl Fn()) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                debug!("read failed: {err}; closing the pair");
                abort();
                return;
            }
        }
    }
}

/// Writes each chunk to `to` once its delay is up; at the end of the stream, half-closes `to`.
fn write_chunks(mut to: &TcpStream, rx: &Receiver<Timed>, delay: Duration, tamper: Tamper, abort: impl Fn()) {
    let mut pos = 0u64;
    for (read_at, mut chunk) in rx.iter() {
        let wait = (read_at + delay).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        let keep = tamper.apply(pos, &mut chunk);
        pos += chunk.len() as u64;
        if keep > 0 {
            if let Err(err) = to.write_all(&chunk[..keep]) {
                debug!("write failed: {err}; closing the pair");
                abort();
                return;
            }
        }
    }
    // The reader saw end of stream (or an error, and the sockets are already shut down).
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::Tamper;

    #[test]
    fn corruption_flips_only_the_byte_at_its_offset_across_chunks() {
        let tamper = Tamper { corrupt_at: Some(5), truncate_after: None };
        let mut first = [0u8; 4];
        let mut second = [0u8; 4];
        assert_eq!(tamper.apply(0, &mut first), 4);
        assert_eq!(tamper.apply(4, &mut second), 4);
        assert_eq!(first, [0; 4]);
        assert_eq!(second, [0, 0xff, 0, 0]);
    }

    #[test]
    fn truncation_forwards_exactly_the_limit_then_nothing() {
        let tamper = Tamper { corrupt_at: None, truncate_after: Some(10) };
        assert_eq!(tamper.apply(0, &mut [0u8; 8]), 8);
        assert_eq!(tamper.apply(8, &mut [0u8; 8]), 2);
        assert_eq!(tamper.apply(16, &mut [0u8; 8]), 0);
    }

    #[test]
    fn no_tamper_forwards_everything_unchanged() {
        let mut chunk = [1u8, 2, 3];
        assert_eq!(Tamper::default().apply(100, &mut chunk), 3);
        assert_eq!(chunk, [1, 2, 3]);
    }
}
