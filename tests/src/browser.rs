//! A real browser for the dashboard tests: headless Chromium driven over WebDriver
//! (chromedriver), both inside one test host's namespace, so the page reaches that
//! host's status endpoint on its loopback. The WebDriver client is a few plain
//! HTTP/1.1 requests with JSON bodies; every connection is made from a thread that
//! entered the namespace.
use crate::netns::Topology;
use crate::vm::spawn_in_named_netns;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where chromedriver listens, on the host's loopback.
const DRIVER: &str = "127.0.0.1:9515";

/// A headless Chromium session in one host's namespace; ends (and its driver) on drop.
pub struct Browser {
    ns: String,
    driver: Child,
    session: String,
}

/// One WebDriver request in namespace `ns`: returns the reply's `value`.
fn call(ns: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let (method, path) = (method.to_string(), path.to_string());
    spawn_in_named_netns(ns, move || {
        let mut c = TcpStream::connect(DRIVER).map_err(|e| format!("chromedriver at {DRIVER}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {DRIVER}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let out = read_reply(&mut c)?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        match v["value"].get("error") {
            Some(err) => Err(format!("{err}: {}", v["value"]["message"])),
            None => Ok(v["value"].clone()),
        }
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// One HTTP reply's body: by its Content-Length (chromedriver may keep the connection open).
fn read_reply(c: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                }
            }
        }
        match c.read(&mut chunk) {
            Ok(0) => {
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP reply")?;
                return Ok(String::from_utf8_lossy(&buf[end + 4..]).into_owned());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium in `host`'s namespace and opens `url`.
    pub fn open(topo: &Topology, host: &str, url: &str) -> Browser {
        crate::require_tool("chromium");
        crate::require_tool("chromedriver");
        let ns = topo.ns(host);
        let driver = Command::new("ip")
            .args(["netns", "exec", &ns, "chromedriver", "--port=9515"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let t0 = Instant::now();
        while call(&ns, "GET", "/status", None).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "chromedriver did not answer in {host}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860"]
        }}}});
        let mut b = Browser { ns, driver, session: String::new() };
        let session = call(&b.ns, "POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("new session: {e}"));
        b.session = session["sessionId"].as_str().expect("a session id").to_string();
        b.post("url", json!({ "url": url })).unwrap_or_else(|e| panic!("open {url}: {e}"));
        b
    }

    fn post(&self, what: &str, body: Value) -> Result<Value, String> {
        call(&self.ns, "POST", &format!("/session/{}/{what}", self.session), Some(body))
    }

    /// The value of `script` (a function body) run in the page.
    pub fn eval(&self, script: &str) -> Result<Value, String> {
        self.post("execute/sync", json!({ "script": script, "args": [] }))
    }

    /// The text of the element with id `id`, or "" if there is none.
    pub fn text(&self, id: &str) -> String {
        let script = format!("const e = document.getElementById('{id}'); return e ? e.textContent : '';");
        self.eval(&script).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = call(&self.ns, "GET", &format!("/session/{}/screenshot", self.session), None).expect("screenshot");
        base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap_or("")).expect("a base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(&self.ns, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
