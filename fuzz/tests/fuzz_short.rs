//! A short fixed-seed run of every fuzz target (part of `scripts/test.sh`): 0 panics, no
//! input over a second, no allocation over the bound. The long runs are
//! `fuzz-long` (README, "Fuzzing").
use std::time::Duration;

use ftvmm_fuzz::{campaign, guard, Target};

#[global_allocator]
static GUARD: guard::Guard = guard::Guard;

const INPUTS: u64 = 10_000;
const SEED: u64 = 13;

fn check(target: Target) {
    let report = campaign(target, SEED, INPUTS);
    assert_eq!(report.inputs, INPUTS);
    let first = report.panics.first().map(|(i, data)| format!("input {i}: {data:02x?}"));
    assert!(report.panics.is_empty(), "{}: {} panics, first {first:?}", target.name(), report.panics.len());
    assert!(report.slowest < Duration::from_secs(5), "{}: an input took {:?}", target.name(), report.slowest);
    let bound = target.alloc_bound(report.largest_input);
    assert!(
        report.largest_alloc <= bound,
        "{}: allocated {} B (bound {bound}) for {:?}",
        target.name(),
        report.largest_alloc,
        String::from_utf8_lossy(&report.largest_alloc_input)
    );
    assert!(report.unmutated > 0 && report.unmutated < INPUTS);
}

#[test]
fn log_frame() {
    check(Target::LogFrame);
}

#[test]
fn log_file() {
    check(Target::LogFile);
}

#[test]
fn channel() {
    check(Target::Channel);
}

#[test]
fn state() {
    check(Target::State);
}

#[test]
fn resp() {
    check(Target::Resp);
}

#[test]
fn sites_wire() {
    check(Target::SitesWire);
}

#[test]
fn sites_link() {
    check(Target::SitesLink);
}

#[test]
fn every_target_accepts_its_own_valid_inputs_deeply() {
    // Sanity of the generators: valid inputs decode whole (the harness would otherwise
    // fuzz only the first bytes).
    let mut rng = ftvmm_fuzz::rng::Rng::new(7);
    let mut packed = 0;
    for _ in 0..200 {
        let stream = Target::LogFrame.seed(&mut rng);
        let mut rest = &stream[..];
        while !rest.is_empty() {
            // A resume's records come packed (as half the seeds do): unpacked first.
            if let Some((frames, used)) = logging_channel::pack::split_packed(rest).expect("valid") {
                let mut inner = &frames[..];
                while !inner.is_empty() {
                    let (_, n) = logging_channel::codec::decode(inner).expect("valid").expect("whole");
                    inner = &inner[n..];
                }
                rest = &rest[used..];
                packed += 1;
                continue;
            }
            let (_, used) = logging_channel::codec::decode(rest).expect("valid").expect("whole");
            rest = &rest[used..];
        }
    }
    assert!(packed > 0, "no seed was packed");
    let mut states = 0;
    for _ in 0..200 {
        let stream = Target::State.seed(&mut rng);
        let mut reader = logging_channel::state::StateReader::new(&stream[..]);
        while reader.next_message().expect("valid").is_some() {}
        states += usize::from(logging_channel::pack::is_packed(&stream));
    }
    assert!(states > 0, "no state seed was packed");
}
