//! The guest boots, prints its banner, and keeps time by the ticks it is given.
use ftvmm_tests::{ftvmm, ftvmm_bin, ok_digest, require_kvm, stdout};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn guest_prints_its_banner_and_a_digest_at_the_stop_exit() {
    let out = ftvmm(&["run", "--stop-at-exit", "3000"]);
    let line = ok_digest(&out);
    assert!(stdout(&out).contains("ftvmm guest"), "no banner: {}", stdout(&out));
    assert!(line.starts_with("state digest at exit 3000: "), "{line}");
    assert_eq!(line.rsplit(' ').next().map(str::len), Some(64), "{line}");
}

#[test]
fn ticks_arrive_at_the_configured_rate_and_sigterm_stops_cleanly() {
    require_kvm();
    let hz = 200u64;
    let mut child = Command::new(ftvmm_bin())
        .args(["run", "--tick-hz", &hz.to_string()])
        .env("FTVMM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ftvmm");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // The guest prints "uptime N s" when its tick count reaches N * hz.
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("utf-8 console");
        if let Some(secs) = line.strip_prefix("uptime ").and_then(|r| r.split(' ').next()) {
            seen.push((secs.parse::<u64>().expect("seconds"), Instant::now()));
            if seen.len() == 4 {
                break;
            }
        }
    }
    nix_kill_term(child.id());
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "SIGTERM must stop the VM cleanly with status 0");

    assert_eq!(seen.len(), 4, "guest printed too few uptime lines: {seen:?}");
    let (first, last) = (seen[0], seen[3]);
    let guest_secs = (last.0 - first.0) as f64;
    let wall_secs = last.1.duration_since(first.1).as_secs_f64();
    let ratio = guest_secs / wall_secs;
    assert!(
        (0.85..1.15).contains(&ratio),
        "guest clock ran at {ratio:.3}x wall clock ({guest_secs} s in {wall_secs:.3} s)"
    );
}

fn nix_kill_term(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// The CPUs `/proc` says thread `task` of process `pid` may run on.
fn allowed_cpus(pid: u32, task: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim().to_string()
}

#[test]
fn cpu_pins_every_thread_and_vcpu_cpu_moves_the_vcpu_thread_alone() {
    use ftvmm_tests::vm::VmProcess;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let (rest, vcpu) = (cpus - 1, 0);
    let mut cmd = Command::new(ftvmm_bin());
    cmd.args(["run", "--tick-hz", "100", "--cpu", &rest.to_string(), "--vcpu-cpu", &vcpu.to_string()]);
    let mut vm = VmProcess::spawn_command(cmd);
    vm.wait_for_line("uptime 1 s", Duration::from_secs(10));
    let pid = vm.pid();
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let task = task.file_name().to_string_lossy().to_string();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/comm")).unwrap_or_default();
        seen.push((comm.trim().to_string(), allowed_cpus(pid, &task)));
    }
    vm.terminate();
    let of = |name: &str| seen.iter().find(|(c, _)| c == name).map(|(_, l)| l.clone());
    assert_eq!(of("vcpu0"), Some(vcpu.to_string()), "the vCPU thread is not on --vcpu-cpu: {seen:?}");
    for name in ["ftvmm", "signals", "output"] {
        assert_eq!(of(name), Some(rest.to_string()), "thread {name} is not on --cpu: {seen:?}");
    }
}

#[test]
fn a_cpu_past_the_last_one_is_a_usage_error() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let out = ftvmm(&["run", "--cpu", &cpus.to_string(), "--stop-at-exit", "100"]);
    assert_eq!(out.status.code(), Some(2), "{}", ftvmm_tests::stderr(&out));
    assert!(ftvmm_tests::stderr(&out).contains("does not exist here"), "{}", ftvmm_tests::stderr(&out));
    // The last CPU is accepted, and the VM runs there.
    let out = ftvmm(&["run", "--cpu", &(cpus - 1).to_string(), "--stop-at-exit", "100"]);
    ok_digest(&out);
}

#[test]
fn mirrored_input_is_refused_for_a_vm_that_is_not_a_follower() {
    // The flag makes a follower keep its TAP's frames for go-live; a primary or a plain
    // run has nothing to keep them for, and says so instead of ignoring it.
    for cmd in ["run", "primary"] {
        let mut args = vec![cmd, "--tap", "tap9", "--guest-ip", "10.99.0.10/24", "--mirrored-input"];
        if cmd == "primary" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let out = ftvmm(&args);
        let err = ftvmm_tests::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("--mirrored-input is for a backup or a replica member"), "{cmd}: {err}");
    }
    let out = ftvmm(&["backup", "--primary", "127.0.0.1:9", "--mirrored-input"]);
    assert_eq!(out.status.code(), Some(2), "without --tap it is a usage error: {}", ftvmm_tests::stderr(&out));
}
