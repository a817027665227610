//! Shared test harness: one store, one connection, a settable clock.
#![allow(dead_code)]

use resp_kv::{Conn, ConnStatus, Limits, ServerInfo, Store};

pub struct Server {
    pub store: Store,
    pub conn: Conn,
    pub now_ms: u64,
    pub role: &'static str,
    pub extra: &'static str,
}

impl Server {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Server { store: Store::new(limits), conn: Conn::new(), now_ms: 1_000, role: "master", extra: "" }
    }

    pub fn info(&self) -> ServerInfo<'static> {
        ServerInfo {
            role: self.role,
            protected: true,
            uptime_ms: 90_061_000,
            connected_clients: 3,
            max_clients: 0,
            clients_extra: "",
            extra: self.extra,
        }
    }

    /// Feed raw bytes; returns the output and the status.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, ConnStatus) {
        let info = self.info();
        let mut out = Vec::new();
        let status = self.conn.feed(input, &mut self.store, self.now_ms, &info, &mut out);
        (out, status)
    }

    /// Send one command as a RESP array and return the reply as text.
    pub fn call(&mut self, args: &[&str]) -> String {
        let (out, _) = self.feed(&encode(args));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Send raw bytes and return the reply as text.
    pub fn raw(&mut self, input: &[u8]) -> String {
        let (out, _) = self.feed(input);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// RESP array-of-bulk-strings encoding of a command.
pub fn encode(args: &[&str]) -> Vec<u8> {
    encode_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
}

pub fn encode_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}
