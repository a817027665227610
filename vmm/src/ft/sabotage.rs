//! TEST-ONLY SABOTAGE: deliberately broken behaviour that the fault campaign
//! (`ftvmm-torture`, `tests/tests/torture.rs`) switches on to prove that its checker
//! catches a broken build. Honoured by **debug builds only**; off unless the
//! environment names it; nothing in the VMM sets it.
/// TEST-ONLY SABOTAGE, for the fault campaign (`ftvmm-torture`) to prove that its
/// checker catches a broken Output Rule: with `FTVMM_UNSAFE_RELEASE_BEFORE_ACK=1` in
/// the environment of a **debug build**, a primary releases output at once, before
/// any follower acknowledged it, in every mode, and sends the log as `async` does
/// (never waiting for a follower's socket: otherwise a full socket would stall the
/// vCPU after a few KiB and hide the bug from the checker). A release build never reads the
/// variable (`cfg!(debug_assertions)` is false there), and nothing sets it but
/// `tests/tests/torture.rs`.
pub(crate) fn unsafe_release_before_ack() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(debug_assertions)
        && *ON.get_or_init(|| {
            let on = std::env::var("FTVMM_UNSAFE_RELEASE_BEFORE_ACK").is_ok_and(|v| v == "1");
            if on {
                tracing::warn!(
                    "FTVMM_UNSAFE_RELEASE_BEFORE_ACK=1: output leaves before the ack (a broken build, for tests)"
                );
            }
            on
        })
}
