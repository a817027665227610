//! A running `ftvmm` process inside a test namespace, and code run from inside one.
use crate::netns::Topology;
use lines::LineReader;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod lines {
    //! Lines of a child's stdout, collected by a thread so a test can wait for one with a deadline.
    use std::sync::mpsc::{Receiver, RecvTimeoutError};
    use std::time::Instant;

    pub struct LineReader {
        pub rx: Receiver<String>,
        pub seen: Vec<String>,
    }

    impl LineReader {
        pub fn wait_for(&mut self, needle: &str, deadline: Instant) -> Option<String> {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            loop {
                let left = deadline.checked_duration_since(Instant::now())?;
                match self.rx.recv_timeout(left) {
                    Ok(line) => {
                        self.seen.push(line.clone());
                        if line.contains(needle) {
                            return Some(line);
                        }
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
    }
}

pub struct VmProcess {
    child: Child,
    stdout: LineReader,
    stderr: Arc<Mutex<String>>,
    /// Set once the stderr reader saw the pipe close (all the process wrote is in).
    stderr_closed: Arc<std::sync::atomic::AtomicBool>,
}

impl VmProcess {
    /// Starts `ftvmm <args>` inside namespace `host`, logging at info level.
    pub fn spawn(topo: &Topology, host: &str, args: &[&str]) -> VmProcess {
        let mut cmd = topo.command(host, crate::ftvmm_bin());
        cmd.args(args);
        VmProcess::spawn_command(cmd)
    }

    /// Starts `cmd` (an `ftvmm` command line, usually under `ip netns exec`), logging at info level.
    /// A replicating command gets a member certificate of the test's group
    /// ([`crate::secure`]) unless it chose `--tls-dir` or `--insecure` itself.
    pub fn spawn_command(mut cmd: std::process::Command) -> VmProcess {
        crate::require_kvm();
        crate::secure(&mut cmd);
        let mut child = cmd
            .env("FTVMM_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ftvmm");
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = stderr_closed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        VmProcess { child, stdout: LineReader { rx, seen: Vec::new() }, stderr, stderr_closed }
    }

    /// Waits up to `timeout` for a console line containing `needle`.
    pub fn try_wait_for_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.stdout.wait_for(needle, Instant::now() + timeout)
    }

    /// Waits for a console line containing `needle`; panics with the VM's output on timeout.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        match self.stdout.wait_for(needle, Instant::now() + timeout) {
            Some(line) => line,
            None => panic!(
                "no line containing {needle:?} within {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
                self.stdout.seen.join("\n"),
                self.stderr()
            ),
        }
    }

    /// Waits until the VMM's diagnostics (stderr) contain `needle`.
    pub fn wait_for_line_in_stderr(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.stderr().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ftvmm never logged {needle:?} within {timeout:?}; stderr:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (up to 10 s) for a clean exit. Returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("ftvmm ignored SIGTERM; stderr:\n{}", self.stderr()))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit; once it has, up to a second more
    /// for the reader to take in the last of its stderr (its final error line is
    /// usually what a test wants to read next).
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().expect("wait") {
                let exited = Instant::now();
                while !self.stderr_closed.load(std::sync::atomic::Ordering::SeqCst)
                    && exited.elapsed() < Duration::from_secs(1)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Console lines read so far, plus whatever arrives within `grace`.
    pub fn stdout_lines(&mut self, grace: Duration) -> Vec<String> {
        let _ = self.stdout.wait_for("\u{0}never", Instant::now() + grace);
        self.stdout.seen.clone()
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Runs `f` on a thread that has joined namespace `host`: every socket it (and any
/// thread it spawns) opens lives in that namespace.
pub fn in_netns<T: Send + 'static>(topo: &Topology, host: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(topo, host, f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Like [`in_netns`], but returns at once; join the handle for the result.
pub fn spawn_in_netns<T: Send + 'static>(
    topo: &Topology,
    host: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    spawn_in_named_netns(&topo.ns(host), f)
}

/// Like [`spawn_in_netns`], for a namespace given by its full name.
pub fn spawn_in_named_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}
