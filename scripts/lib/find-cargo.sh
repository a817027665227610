# shellcheck shell=bash
# find_cargo: puts cargo on PATH when `sudo` dropped it, or returns 1.
#
# sudo resets PATH (secure_path), so `sudo scripts/test.sh` does not see the
# ~/.cargo/bin of the user who typed it. Use that user's rustup toolchains
# (RUSTUP_HOME), but leave CARGO_HOME as root's own: root downloading crates into
# the user's ~/.cargo would leave root-owned files there that break the user's
# next plain `cargo` run.
find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local home
    for home in "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)" "${HOME:-}" /root; do
        [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ] || continue
        export PATH="$home/.cargo/bin:$PATH"
        [ -n "${RUSTUP_HOME:-}" ] || [ ! -d "$home/.rustup" ] || export RUSTUP_HOME="$home/.rustup"
        return 0
    done
    return 1
}

# What to say when find_cargo fails.
# shellcheck disable=SC2016 # $PATH is for the user's shell to expand
FIND_CARGO_HELP='cargo not found (not on PATH, nor in ~/.cargo/bin of $SUDO_USER or root): install Rust from https://rustup.rs, or keep your PATH through sudo: sudo env PATH="$PATH" '
