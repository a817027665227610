//! AFL++ harness: `FTVMM_FUZZ_TARGET=<name> cargo afl fuzz -i IN -o OUT target/release/ftvmm-fuzz-afl`
//! runs one `ftvmm_fuzz::Target` (log-frame, log-file, channel, state, resp, sites-wire,
//! sites-link) under coverage guidance. `scripts/fuzz-afl.sh` does the setup.
fn main() {
    let name = std::env::var("FTVMM_FUZZ_TARGET").unwrap_or_else(|_| "log-frame".into());
    let Some(target) = ftvmm_fuzz::Target::from_name(&name) else {
        eprintln!("ftvmm-fuzz-afl: unknown FTVMM_FUZZ_TARGET {name:?}");
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target.run(data));
}
