//! A raw RESP client for the tests: the guest's key-value server, one command at a time.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The guest's server, as the topology places it.
pub const GUEST: &str = "10.77.0.10:6379";

/// Sends an inline command and returns its first reply line, without the CRLF.
pub fn command(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, cmd: &str) -> String {
    stream.write_all(format!("{cmd}\r\n").as_bytes()).expect("send");
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    line.trim_end().to_string()
}

/// A connection to the guest with a reader over it (call from inside the client namespace).
pub fn connect() -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(GUEST).expect("connect to the guest");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

/// `GET key` as an integer, on a fresh connection.
pub fn get_int(key: &str) -> i64 {
    let (mut s, mut r) = connect();
    command(&mut s, &mut r, &format!("GET {key}"));
    let mut value = String::new();
    r.read_line(&mut value).expect("value");
    value.trim_end().parse().expect("an integer value")
}
