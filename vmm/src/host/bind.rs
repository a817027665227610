//! Binding a listening port that a previous instance of this VMM may still hold.
//!
//! A VMM restarted on the same host right after a crash (or `kill -9`) can find its
//! ports still bound for a moment: the dead process's sockets close only when its
//! last thread is gone, and tearing down a VM's memory takes a while on a loaded
//! host. Waiting a little is what an operator would do by hand.
use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// How long a port that is in use is retried before giving up.
pub const ADDR_IN_USE_GRACE: Duration = Duration::from_secs(5);

/// Binds `addr`, retrying for up to `grace` while it is in use; other errors at once.
pub fn listen(addr: &str, grace: Duration) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + grace;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_freed_within_the_grace_is_bound() {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = first.local_addr().expect("addr").to_string();
        let freed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let t0 = Instant::now();
        assert!(listen(&addr, Duration::from_secs(3)).is_ok());
        assert!(t0.elapsed() >= Duration::from_millis(250), "it waited for the port");
        freed.join().expect("freed");
    }

    #[test]
    fn a_port_held_past_the_grace_is_an_error_that_says_so() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr").to_string();
        let err = listen(&addr, Duration::from_millis(200)).expect_err("still in use");
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let t0 = Instant::now();
        assert!(listen("not an address", Duration::from_secs(5)).is_err());
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
