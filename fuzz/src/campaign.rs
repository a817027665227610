//! Running a target over many generated inputs.
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::mutate::mutate;
use crate::rng::Rng;
use crate::{guard, Target};

/// What a campaign saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs that were valid as generated (not mutated).
    pub unmutated: u64,
    /// Inputs that panicked: (input index, the input).
    pub panics: Vec<(u64, Vec<u8>)>,
    /// The slowest input's time.
    pub slowest: Duration,
    /// The largest single allocation during any input (needs `guard::Guard` installed).
    pub largest_alloc: usize,
    /// The input that made it.
    pub largest_alloc_input: Vec<u8>,
    /// The largest input.
    pub largest_input: usize,
    /// Wall time of the whole campaign.
    pub elapsed: Duration,
}

/// Runs `target` on `inputs` inputs generated from `seed`: a fresh valid input, then
/// 1..=4 mutations of it (one input in eight is left valid). Panics are caught and
/// recorded with their input; `on_slow` hears of any input that takes over a second.
pub fn campaign(target: Target, seed: u64, inputs: u64) -> Report {
    let mut rng = Rng::new(seed ^ (target as u64).wrapping_mul(0x1000_0000_01b3));
    let mut report = Report::default();
    let started = Instant::now();
    let mut other = target.seed(&mut rng);
    for index in 0..inputs {
        let mut data = target.seed(&mut rng);
        if rng.one_in(8) {
            report.unmutated += 1;
        } else {
            mutate(&mut rng, &mut data, &other);
        }
        if rng.one_in(4) {
            other = data.clone();
        }
        report.largest_input = report.largest_input.max(data.len());
        guard::reset();
        let t = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| target.run(&data)));
        report.slowest = report.slowest.max(t.elapsed());
        if guard::largest() > report.largest_alloc {
            report.largest_alloc = guard::largest();
            report.largest_alloc_input = data.clone();
        }
        if outcome.is_err() {
            report.panics.push((index, data));
        }
        report.inputs += 1;
    }
    report.elapsed = started.elapsed();
    report
}
