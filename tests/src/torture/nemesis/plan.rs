//! The nemesis's draws: every random choice of a round, made from the seed before
//! anything is done, so that a seed names its schedule (`ftvmm-torture --plan`
//! prints it without running anything). Only the victim's identity (the primary
//! 2 times in 3: whoever is primary at that moment) and timing are left to the run.
use crate::torture::clients::Rng;
use std::fmt;
use std::time::Duration;

/// One fault and its parameters. Offsets (1..n) name another member relative to the
/// victim: `(victim + offset) % n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, restart after `down`, with the `--data-dir` emptied first if `wipe`.
    Kill { down: Duration, wipe: bool },
    /// `SIGSTOP` for `hold`, then `SIGCONT`.
    Pause { hold: Duration },
    /// Links down for `hold`; with `also`, a second member's too.
    Partition { hold: Duration, also: Option<usize> },
    /// One direction dropped for `hold` (`way`: 0 all the victim sends, 1 all sent to
    /// it, 2 what it sends to `peer`, 3 what `peer` sends to it).
    OneWay { hold: Duration, way: u64, peer: usize },
    /// What a follower receives slowed by `ms` for `hold` (the victim, or `alt` when
    /// the victim is the primary).
    Slow { ms: u64, hold: Duration, alt: usize },
    /// The file witness away for `away`; the victim killed meanwhile if `kill`.
    Witness { away: Duration, kill: bool },
}

/// One round: traffic for `quiet`, then `fault` on the victim (`any`, unless
/// `primary` and there is a primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub quiet: Duration,
    pub fault: Fault,
    pub any: usize,
    pub primary: bool,
}

fn ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.below(hi - lo))
}

/// Draws the next round for a group of `n` members (`witness`: it has a file witness;
/// `wipe`: kills may restart without the `--data-dir`). The weights, of 20: kill 7,
/// pause 3, partition 3, one-way 3, slow 2, witness 2 (a partition without a witness).
pub fn draw(rng: &mut Rng, n: usize, witness: bool, wipe: bool) -> Round {
    let quiet = ms(rng, 300, 1_500);
    let kind = rng.below(20);
    let any = rng.below(n as u64) as usize;
    let primary = rng.below(3) < 2;
    let other = |rng: &mut Rng| 1 + rng.below(n as u64 - 1) as usize;
    let partition = |rng: &mut Rng| {
        let hold = ms(rng, 500, 3_000);
        let also = (n == 3 && rng.below(4) == 0).then(|| other(rng));
        Fault::Partition { hold, also }
    };
    let fault = match kind {
        0..=6 => {
            let down = ms(rng, 1, 1_500);
            Fault::Kill { down, wipe: rng.below(3) == 0 && wipe }
        }
        7..=9 => Fault::Pause { hold: ms(rng, 500, 4_000) },
        10..=12 => partition(rng),
        13..=15 => {
            let hold = ms(rng, 500, 3_000);
            let peer = other(rng);
            Fault::OneWay { hold, peer, way: rng.below(4) }
        }
        16..=17 => {
            let ms_ = 5 + rng.below(45);
            let hold = ms(rng, 1_000, 4_000);
            Fault::Slow { ms: ms_, hold, alt: other(rng) }
        }
        _ if witness => {
            let away = ms(rng, 500, 4_000);
            Fault::Witness { away, kill: rng.below(2) == 0 }
        }
        _ => partition(rng),
    };
    Round { quiet, fault, any, primary }
}

/// The first `rounds` rounds of a seed's schedule.
pub fn plan(seed: u64, n: usize, witness: bool, wipe: bool, rounds: usize) -> Vec<Round> {
    let mut rng = Rng(seed);
    (0..rounds).map(|_| draw(&mut rng, n, witness, wipe)).collect()
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let victim = if self.primary {
            format!("the primary (else member {})", self.any + 1)
        } else {
            format!("member {}", self.any + 1)
        };
        write!(f, "after {:?}: ", self.quiet)?;
        match self.fault {
            Fault::Kill { down, wipe } => write!(
                f,
                "kill -9 {victim}, restart after {down:?} {}",
                if wipe { "without its --data-dir" } else { "with its --data-dir" }
            ),
            Fault::Pause { hold } => write!(f, "SIGSTOP {victim} for {hold:?}"),
            Fault::Partition { hold, also: None } => write!(f, "cut {victim} off for {hold:?}"),
            Fault::Partition { hold, also: Some(o) } => {
                write!(f, "cut {victim} and the member {o} after it off for {hold:?}")
            }
            Fault::OneWay { hold, way, peer } => {
                let what = match way {
                    0 => "everything it sends".to_string(),
                    1 => "everything sent to it".to_string(),
                    2 => format!("what it sends to the member {peer} after it"),
                    _ => format!("what the member {peer} after it sends to it"),
                };
                write!(f, "one-way for {hold:?} around {victim}: {what} dropped")
            }
            Fault::Slow { ms, hold, alt } => write!(
                f,
                "slow logging link ({ms} ms) to {victim} for {hold:?} (to the member {alt} after it if it is the primary)"
            ),
            Fault::Witness { away, kill } => {
                write!(f, "the witness away for {away:?}{}", if kill { format!(", {victim} killed meanwhile") } else { String::new() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &[Round]) -> [usize; 6] {
        let mut k = [0; 6];
        for r in p {
            k[match r.fault {
                Fault::Kill { .. } => 0,
                Fault::Pause { .. } => 1,
                Fault::Partition { .. } => 2,
                Fault::OneWay { .. } => 3,
                Fault::Slow { .. } => 4,
                Fault::Witness { .. } => 5,
            }] += 1;
        }
        k
    }

    #[test]
    fn a_seed_names_its_schedule_and_every_fault_kind_comes_up() {
        assert_eq!(plan(7, 3, false, true, 50), plan(7, 3, false, true, 50), "the same seed, the same schedule");
        assert_ne!(plan(7, 3, false, true, 50), plan(8, 3, false, true, 50));
        let three = plan(1000, 3, false, true, 200);
        let k = kinds(&three);
        assert!(k[..5].iter().all(|&c| c > 0) && k[5] == 0, "no witness with 3 members: {k:?}");
        let two = plan(1000, 2, true, true, 200);
        assert!(kinds(&two).iter().all(|&c| c > 0), "{:?}", kinds(&two));
        assert!(
            three.iter().any(|r| matches!(r.fault, Fault::Kill { wipe: true, .. }))
                && three.iter().any(|r| matches!(r.fault, Fault::Kill { wipe: false, .. })),
            "kills restart with and without the --data-dir"
        );
        assert!(plan(1000, 3, false, false, 200).iter().all(|r| !matches!(r.fault, Fault::Kill { wipe: true, .. })));
        // Offsets name another member, never the victim.
        for r in three.iter().chain(&two) {
            if let Fault::OneWay { peer: o, .. } | Fault::Slow { alt: o, .. } | Fault::Partition { also: Some(o), .. } =
                r.fault
            {
                assert!((1..3).contains(&o), "{r:?}");
            }
        }
        assert!(three[0].to_string().starts_with("after "), "{}", three[0]);
        // The suite's short campaigns (tests/tests/torture.rs) count on these seeds.
        let nine = kinds(&plan(9, 3, false, true, 8));
        assert!(nine[..5].iter().all(|&c| c > 0), "seed 9, 3 members: {nine:?}");
        let twenty_seven = kinds(&plan(27, 2, true, true, 5));
        assert!(
            [0, 2, 3, 4, 5].iter().all(|&k| twenty_seven[k] > 0),
            "seed 27, 2 members (all but a pause): {twenty_seven:?}"
        );
    }
}
