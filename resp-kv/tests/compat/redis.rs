//! A private `redis-server` for one test: loopback only, a free port, one database (as
//! the guest has), no persistence; killed when dropped.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Commands of Redis the guest does not implement (examples the scripts use): the
/// reference server is started without them, so both must answer "unknown command".
pub const UNSUPPORTED: &[&str] = &["LPUSH", "HSET", "SUBSCRIBE", "EVAL"];

pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Start one; fails the test, saying what to install, when redis-server is missing.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--databases", "1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // The guest's value limit (README), so length errors compare too.
            .args(["--proto-max-bulk-len", "4194304"])
            // Commands the guest does not have: Redis then answers them as unknown.
            .args(UNSUPPORTED.iter().flat_map(|c| ["--rename-command", c, ""]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the side-by-side comparison needs Debian's \
                     redis-server package (scripts/lib/test-deps; scripts/test.sh installs it)"
                )
            });
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(server.addr()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {} within 10 s", server.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
