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

/// How often each kind of fault is drawn: weights, each out of their sum
/// (`--mix kill=14,pause=1,...`). The default, of 20: kill 7, pause 3, partition 3,
/// one-way 3, slow 2, witness 2 (a partition when there is no witness). A long run
/// aiming at a number of kills weights kills up; every kind keeps a weight unless set
/// to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub kill: u64,
    pub pause: u64,
    pub cut: u64,
    pub one_way: u64,
    pub slow: u64,
    pub witness: u64,
}

/// Past this a weight is a typo, not a mix (the draw is `below(sum)`).
pub const MAX_WEIGHT: u64 = 1_000;

impl Default for Mix {
    fn default() -> Mix {
        Mix { kill: 7, pause: 3, cut: 3, one_way: 3, slow: 2, witness: 2 }
    }
}

impl Mix {
    fn weights(&self) -> [u64; 6] {
        [self.kill, self.pause, self.cut, self.one_way, self.slow, self.witness]
    }
}

const KINDS: [&str; 6] = ["kill", "pause", "cut", "one-way", "slow", "witness"];

impl std::str::FromStr for Mix {
    type Err = String;

    /// `kill=14,pause=1`: the kinds named take those weights, the others keep the
    /// default's.
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut w = Mix::default().weights();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--mix {s:?}: {part:?} is not KIND=WEIGHT (kinds: {})", KINDS.join(", ")))?;
            let k = KINDS
                .iter()
                .position(|&kind| kind == name.trim())
                .ok_or_else(|| format!("--mix: unknown fault kind {name:?} (kinds: {})", KINDS.join(", ")))?;
            w[k] = match value.trim().parse::<u64>() {
                Ok(v) if v <= MAX_WEIGHT => v,
                _ => return Err(format!("--mix: {name}={value:?}: a weight is a whole number 0..={MAX_WEIGHT}")),
            };
        }
        if w.iter().sum::<u64>() == 0 {
            return Err(format!("--mix {s:?}: every weight is 0, so no fault could be drawn"));
        }
        Ok(Mix { kill: w[0], pause: w[1], cut: w[2], one_way: w[3], slow: w[4], witness: w[5] })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = KINDS.iter().zip(self.weights()).map(|(k, w)| format!("{k}={w}")).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Draws the next round for a group of `n` members (`witness`: it has a file witness;
/// `wipe`: kills may restart without the `--data-dir`), each kind by its weight in `mix`.
pub fn draw(rng: &mut Rng, n: usize, witness: bool, wipe: bool, mix: &Mix) -> Round {
    let quiet = ms(rng, 300, 1_500);
    let weights = mix.weights();
    // The kind's index by cumulative weight: with the default mix exactly the draws of
    // the fixed weights before `--mix` existed, so every seed keeps its schedule.
    let mut pick = rng.below(weights.iter().sum());
    let mut kind = weights.len() - 1;
    for (k, &w) in weights.iter().enumerate() {
        if pick < w {
            kind = k;
            break;
        }
        pick -= w;
    }
    let any = rng.below(n as u64) as usize;
    let primary = rng.below(3) < 2;
    let other = |rng: &mut Rng| 1 + rng.below(n as u64 - 1) as usize;
    let partition = |rng: &mut Rng| {
        let hold = ms(rng, 500, 3_000);
        let also = (n == 3 && rng.below(4) == 0).then(|| other(rng));
        Fault::Partition { hold, also }
    };
    let fault = match kind {
        0 => {
            let down = ms(rng, 1, 1_500);
            Fault::Kill { down, wipe: rng.below(3) == 0 && wipe }
        }
        1 => Fault::Pause { hold: ms(rng, 500, 4_000) },
        2 => partition(rng),
        3 => {
            let hold = ms(rng, 500, 3_000);
            let peer = other(rng);
            Fault::OneWay { hold, peer, way: rng.below(4) }
        }
        4 => {
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
pub fn plan(seed: u64, n: usize, witness: bool, wipe: bool, mix: &Mix, rounds: usize) -> Vec<Round> {
    let mut rng = Rng(seed);
    (0..rounds).map(|_| draw(&mut rng, n, witness, wipe, mix)).collect()
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
        assert_eq!(
            plan(7, 3, false, true, &Mix::default(), 50),
            plan(7, 3, false, true, &Mix::default(), 50),
            "the same seed, the same schedule"
        );
        assert_ne!(plan(7, 3, false, true, &Mix::default(), 50), plan(8, 3, false, true, &Mix::default(), 50));
        let three = plan(1000, 3, false, true, &Mix::default(), 200);
        let k = kinds(&three);
        assert!(k[..5].iter().all(|&c| c > 0) && k[5] == 0, "no witness with 3 members: {k:?}");
        let two = plan(1000, 2, true, true, &Mix::default(), 200);
        assert!(kinds(&two).iter().all(|&c| c > 0), "{:?}", kinds(&two));
        assert!(
            three.iter().any(|r| matches!(r.fault, Fault::Kill { wipe: true, .. }))
                && three.iter().any(|r| matches!(r.fault, Fault::Kill { wipe: false, .. })),
            "kills restart with and without the --data-dir"
        );
        assert!(plan(1000, 3, false, false, &Mix::default(), 200)
            .iter()
            .all(|r| !matches!(r.fault, Fault::Kill { wipe: true, .. })));
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
        let nine = kinds(&plan(9, 3, false, true, &Mix::default(), 8));
        assert!(nine[..5].iter().all(|&c| c > 0), "seed 9, 3 members: {nine:?}");
        let twenty_seven = kinds(&plan(27, 2, true, true, &Mix::default(), 5));
        assert!(
            [0, 2, 3, 4, 5].iter().all(|&k| twenty_seven[k] > 0),
            "seed 27, 2 members (all but a pause): {twenty_seven:?}"
        );
    }

    #[test]
    fn a_mix_weights_the_kinds_and_bad_mixes_are_refused() {
        let kills: Mix = "kill=14,pause=1,cut=2,one-way=1,slow=1,witness=1".parse().expect("valid");
        let k = kinds(&plan(1000, 2, true, true, &kills, 2_000));
        assert!(k[0] > 1_200 && k[0] < 1_600, "about 14 in 20 kills: {k:?}");
        assert!(k[1..].iter().all(|&c| c > 0), "every kind with a weight comes up: {k:?}");
        let no_pause: Mix = "pause=0".parse().expect("valid");
        assert_eq!(no_pause, Mix { pause: 0, ..Mix::default() }, "unnamed kinds keep the default");
        assert_eq!(kinds(&plan(5, 3, false, true, &no_pause, 500))[1], 0, "a weight of 0 is never drawn");
        assert_eq!(Mix::default().to_string().parse::<Mix>(), Ok(Mix::default()));
        assert!("kill=1001".parse::<Mix>().unwrap_err().contains("0..=1000"), "past MAX_WEIGHT");
        assert!("kill=x".parse::<Mix>().is_err());
        assert!("murder=3".parse::<Mix>().unwrap_err().contains("unknown fault kind"));
        assert!("kill".parse::<Mix>().unwrap_err().contains("KIND=WEIGHT"));
        let none = "kill=0,pause=0,cut=0,one-way=0,slow=0,witness=0".parse::<Mix>();
        assert!(none.unwrap_err().contains("every weight is 0"));
    }
}
