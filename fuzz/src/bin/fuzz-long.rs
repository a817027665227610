//! Long fuzz runs: `fuzz-long [TARGET|all] [INPUTS] [SEED]` (defaults: all, 10^7, 1);
//! `fuzz-long seeds TARGET DIR [N]` writes a seed corpus for AFL++ (`scripts/fuzz-afl.sh`).
//!
//! Prints, per target, inputs run, inputs per second, panics, the slowest input and the
//! largest single allocation, and exits 1 on any panic, any input slower than 10 s, a
//! chunk of 1,000 inputs that makes no progress for 60 s (a watchdog ends the process and
//! names the target and chunk: a hang) or any allocation over the bound
//! (`Target::alloc_bound`). Run it niced and in release:
//! `nice -n 19 cargo run --release -p ftvmm-fuzz --bin fuzz-long -- all 10000000`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftvmm_fuzz::{campaign, guard, Target};

#[global_allocator]
static GUARD: guard::Guard = guard::Guard;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("seeds") {
        return write_seeds(&args[1..]);
    }
    let targets: Vec<Target> = match args.first().map(String::as_str) {
        None | Some("all") => Target::ALL.to_vec(),
        Some(name) => match Target::from_name(name) {
            Some(t) => vec![t],
            None => {
                let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                eprintln!("fuzz-long: unknown target {name:?}; one of: all {}", names.join(" "));
                std::process::exit(2);
            }
        },
    };
    let inputs: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
    let seed: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
    // Silence the default hook: panics are counted and their inputs printed below.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for target in targets {
        // Chunks of 1,000 inputs with their own seeds, so the watchdog can name a chunk;
        // small, so that a run starved by other work at nice 19 is not taken for a hang.
        let chunk = 1_000.min(inputs.max(1));
        let done = Arc::new(AtomicU64::new(0));
        let watched = done.clone();
        let name = target.name();
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = watched.load(Ordering::Relaxed);
                if now == FINISHED {
                    return;
                }
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(60) {
                    eprintln!("fuzz-long: {name}: no progress for 60 s in chunk {now}: a hang");
                    std::process::exit(1);
                }
            }
        });
        let started = Instant::now();
        let (mut total, mut panics, mut slowest, mut largest, mut biggest_input) = (0u64, 0usize, Duration::ZERO, 0, 0);
        let mut c = 0u64;
        while total < inputs {
            let n = chunk.min(inputs - total);
            let report = campaign(target, seed.wrapping_mul(1_000_003).wrapping_add(c), n);
            for (index, data) in report.panics.iter().take(3) {
                eprintln!("fuzz-long: {name}: PANIC at chunk {c} input {index}: {}", hex(data));
            }
            total += report.inputs;
            panics += report.panics.len();
            slowest = slowest.max(report.slowest);
            largest = largest.max(report.largest_alloc);
            biggest_input = biggest_input.max(report.largest_input);
            c += 1;
            done.store(c, Ordering::Relaxed);
        }
        done.store(FINISHED, Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        let bound = target.alloc_bound(biggest_input);
        let over = largest > bound;
        println!(
            "{name:<11} inputs {total:>10}  {:>8.0}/s  {secs:>7.1} s  panics {panics}  slowest {:>6.2} ms  \
             largest alloc {largest} B (bound {bound} B{})  largest input {biggest_input} B",
            total as f64 / secs,
            slowest.as_secs_f64() * 1e3,
            if over { ", OVER" } else { "" }
        );
        failed |= panics > 0 || over || slowest > Duration::from_secs(10);
    }
    std::process::exit(i32::from(failed));
}

/// `fuzz-long seeds TARGET DIR N`: N valid inputs of TARGET as files in DIR (a corpus
/// to start a coverage-guided fuzzer from).
fn write_seeds(args: &[String]) {
    let (Some(target), Some(dir)) = (args.first().and_then(|n| Target::from_name(n)), args.get(1)) else {
        eprintln!("usage: fuzz-long seeds TARGET DIR [N]");
        std::process::exit(2);
    };
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(16);
    std::fs::create_dir_all(dir).expect("create the seed directory");
    let mut rng = ftvmm_fuzz::rng::Rng::new(1);
    for i in 0..n {
        std::fs::write(format!("{dir}/seed-{i:03}"), target.seed(&mut rng)).expect("write a seed");
    }
}

/// What a finished target's watchdog is told.
const FINISHED: u64 = u64::MAX;

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
