//! Hostile guests: tiny hand-assembled kernels (`--kernel`) that program the devices
//! with wild addresses, absurd lengths and out-of-range ring indices, fault, or never
//! exit. The monitor keeps running or reports the guest's end; it never panics, and a
//! replay of the recorded log reaches the same state digest.
use ftvmm_tests::{ftvmm, ftvmm_bin, path_str, stderr, stdout, TempDir};
use guest_abi::{console, nic, system, IMAGE_BASE};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 64-bit machine code, assembled by hand: the monitor starts the guest in long mode at
/// ring 0 with the low 4 GiB identity-mapped and IF clear (docs/guest-abi.md).
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    /// `movabs rbx, addr; movabs rax, value; mov [rbx], rax`: one 8-byte store (an MMIO
    /// write, a counted exit, when `addr` is not RAM).
    fn store(mut self, addr: u64, value: u64) -> Self {
        self.0.extend_from_slice(&[0x48, 0xBB]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self.0.extend_from_slice(&[0x48, 0xB8]);
        self.0.extend_from_slice(&value.to_le_bytes());
        self.0.extend_from_slice(&[0x48, 0x89, 0x03]);
        self
    }

    /// `movabs rbx, addr; mov rax, [rbx]`: one 8-byte load.
    fn load(mut self, addr: u64) -> Self {
        self.0.extend_from_slice(&[0x48, 0xBB]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self.0.extend_from_slice(&[0x48, 0x8B, 0x03]);
        self
    }

    /// Stores to an unclaimed MMIO address forever: an endless run of counted exits,
    /// so `--stop-at-exit` ends record and replay at the same point.
    fn exit_forever(self) -> Vec<u8> {
        let start = self.0.len();
        let mut code = self.store(MMIO_NOBODY, 0).0;
        let back = code.len() - start + 2;
        code.extend_from_slice(&[0xEB, (back as u8).wrapping_neg()]); // jmp back to the store
        code
    }

    /// `jmp $`: computes forever without a single exit.
    fn spin(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0xEB, 0xFE]);
        self.0
    }
}

/// Inside the MMIO window, claimed by no device.
const MMIO_NOBODY: u64 = 0xD000_8000;
const MIB: u64 = 1 << 20;
/// The default guest's RAM.
const RAM: u64 = 64 * MIB;

/// A minimal ELF64 executable: one PT_LOAD segment of `code` at `IMAGE_BASE`, entry there.
fn elf(code: &[u8]) -> Vec<u8> {
    const CODE_AT: usize = 0x1000;
    let mut f = vec![0u8; CODE_AT];
    f[..16].copy_from_slice(&[0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let put = |f: &mut Vec<u8>, at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &IMAGE_BASE.to_le_bytes()); // e_entry
    put(&mut f, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut f, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut f, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut f, 56, &1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    put(&mut f, ph, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut f, ph + 4, &5u32.to_le_bytes()); // R+X
    put(&mut f, ph + 8, &(CODE_AT as u64).to_le_bytes());
    put(&mut f, ph + 16, &IMAGE_BASE.to_le_bytes());
    put(&mut f, ph + 24, &IMAGE_BASE.to_le_bytes());
    put(&mut f, ph + 32, &(code.len() as u64).to_le_bytes());
    put(&mut f, ph + 40, &(code.len() as u64).to_le_bytes());
    put(&mut f, ph + 48, &0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

fn no_panic(what: &str, out: &std::process::Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{what}: the monitor panicked: {err}");
}

fn digest_of(out: &std::process::Output) -> String {
    stdout(out).lines().find(|l| l.starts_with("state digest at exit")).map(str::to_owned).unwrap_or_default()
}

/// Records `code` to `--stop-at-exit stop`, replays the log, and returns both outputs'
/// digest lines after checking neither panicked.
fn record_and_replay(dir: &TempDir, name: &str, code: &[u8], stop: u64) -> (String, String) {
    let kernel = dir.path(&format!("{name}.elf"));
    std::fs::write(&kernel, elf(code)).expect("write the kernel");
    let log = dir.path(&format!("{name}.ftlog"));
    let stop = stop.to_string();
    let common = ["--kernel", path_str(&kernel), "--log", path_str(&log), "--stop-at-exit", &stop];
    let recorded = ftvmm(&[&["record"][..], &common].concat());
    no_panic(name, &recorded);
    assert_eq!(recorded.status.code(), Some(0), "{name}: record: {}", stderr(&recorded));
    let replayed = ftvmm(&[&["replay"][..], &common].concat());
    no_panic(name, &replayed);
    assert_eq!(replayed.status.code(), Some(0), "{name}: replay: {}", stderr(&replayed));
    (digest_of(&recorded), digest_of(&replayed))
}

#[test]
fn wild_mmio_console_and_nic_programming_is_survived_and_replays_to_the_same_digest() {
    let dir = TempDir::new("hostile-mmio");
    let c = console::BASE;
    let n = nic::BASE;
    let code = Asm::default()
        // Wild MMIO: unclaimed window pages, the gap between RAM and the window, the
        // last bytes below 4 GiB, unknown offsets inside device pages.
        .store(MMIO_NOBODY, u64::MAX)
        .load(0xD000_F000)
        .store(0x8000_0000, 0x1234)
        .load(0xCFFF_FFF8)
        .load(0xFFFF_FFF8)
        .store(system::BASE + 0x7F8, 1)
        .load(n + 0xFF8)
        // The console pointed outside RAM, across its end, with absurd lengths.
        .store(c + console::TX_ADDR, 0xFFFF_FFFF_FFFF_F000)
        .store(c + console::TX_LEN, 4096)
        .store(c + console::TX_ADDR, RAM - 10)
        .store(c + console::TX_LEN, 100)
        .store(c + console::TX_LEN, u64::MAX)
        // NIC rings outside RAM, across its end, with absurd slot counts: refused.
        .store(n + nic::RX_RING, 0xFFFF_FFFF_FFFF_F000)
        .store(n + nic::TX_RING, RAM - 4096)
        .store(n + nic::SHARED, RAM - 8)
        .store(n + nic::RING_SLOTS, 1024)
        .store(n + nic::ENABLE, 1)
        .load(n + nic::STATUS)
        .store(n + nic::RING_SLOTS, u64::MAX)
        .store(n + nic::ENABLE, 1)
        .store(n + nic::RING_SLOTS, 0)
        .store(n + nic::ENABLE, 1)
        // Accepted, but everything overlaps: both rings and the indices on one page.
        .store(n + nic::RX_RING, 0x20_0000)
        .store(n + nic::TX_RING, 0x20_0000)
        .store(n + nic::SHARED, 0x20_0000)
        .store(n + nic::RING_SLOTS, 1)
        .store(n + nic::ENABLE, 1)
        // tx_prod 4 billion ahead, then a slot claiming 65535 bytes, then a plausible one.
        .store(0x20_0000 + nic::SHARED_TX_PROD, 0xFFFF_FFFF)
        .store(n + nic::TX_KICK, 1)
        .store(0x20_0000, 0xFFFF)
        .store(0x20_0000 + nic::SHARED_TX_PROD, 0x1_0000_0000)
        .store(n + nic::TX_KICK, 1)
        .store(0x20_0000, 60)
        .store(0x20_0008, 0x0000_0001_0000_0001)
        .store(n + nic::TX_KICK, 1)
        // rx_cons far ahead of rx_prod, then disable and re-enable.
        .store(0x20_0000 + nic::SHARED_RX_PROD, 0xFFFF_FFFF_0000_0000)
        .store(n + nic::ENABLE, 0)
        .store(n + nic::TX_KICK, 1)
        .store(n + nic::ENABLE, 1)
        .exit_forever();
    let (recorded, replayed) = record_and_replay(&dir, "mmio", &code, 400);
    assert!(recorded.starts_with("state digest at exit 400: "), "record stopped at exit 400: {recorded:?}");
    assert_eq!(recorded, replayed, "the replay of a hostile guest reaches the same state");
}

#[test]
fn a_guest_that_faults_is_reported_and_the_monitor_stays_whole() {
    let dir = TempDir::new("hostile-fault");
    // A guest reporting an exception through the fault registers: exit 5, with the vector.
    let reported = Asm::default()
        .store(system::BASE + system::FAULT_ERROR, 0xDEAD)
        .store(system::BASE + system::FAULT_RIP, 0x1234)
        .store(system::BASE + system::FAULT_VECTOR, 14)
        .exit_forever();
    let kernel = dir.path("fault.elf");
    std::fs::write(&kernel, elf(&reported)).expect("write");
    let out = ftvmm(&["run", "--kernel", path_str(&kernel)]);
    no_panic("fault report", &out);
    assert_eq!(out.status.code(), Some(5), "a reported fault is the guest's failure: {}", stderr(&out));

    // An access above the 4 GiB the page tables map: #PF with no IDT, a triple fault.
    let wild = Asm::default().store(MMIO_NOBODY, 1).load(0x7F_0000_0000).exit_forever();
    let kernel = dir.path("triple.elf");
    std::fs::write(&kernel, elf(&wild)).expect("write");
    let out = ftvmm(&["run", "--kernel", path_str(&kernel), "--stop-at-exit", "1000"]);
    no_panic("triple fault", &out);
    assert!(out.status.code().is_some(), "ended by a signal: {}", stderr(&out));
    assert!(!digest_of(&out).contains("exit 1000"), "the guest cannot run on after a triple fault");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("triple-faulted"), "the monitor says what the guest did: {}", stderr(&out));
    // Recorded: the recorder reports the same; its log has no end record (a fatal exit
    // is not a clean end), and a replay refuses it as cut short, cleanly.
    let log = dir.path("triple.ftlog");
    let rec = ftvmm(&["record", "--kernel", path_str(&kernel), "--log", path_str(&log)]);
    no_panic("triple fault, record", &rec);
    assert!(stderr(&rec).contains("triple-faulted"), "{}", stderr(&rec));
    let rep = ftvmm(&["replay", "--kernel", path_str(&kernel), "--log", path_str(&log)]);
    no_panic("triple fault, replay", &rep);
    assert_eq!(rep.status.code(), Some(4), "{}", stderr(&rep));
}

#[test]
fn a_guest_that_never_exits_leaves_the_monitor_running_and_stoppable() {
    let dir = TempDir::new("hostile-spin");
    let kernel = dir.path("spin.elf");
    std::fs::write(&kernel, elf(&Asm::default().store(MMIO_NOBODY, 1).spin())).expect("write");
    ftvmm_tests::require_kvm();
    let mut child = Command::new(ftvmm_bin())
        .args(["run", "--kernel", path_str(&kernel)])
        .env("FTVMM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ftvmm");
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().expect("try_wait").is_none(), "the monitor must keep running a spinning guest");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM did not stop a spinning guest");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    no_panic("spin", &out);
    assert_eq!(status.code(), Some(0), "a clean stop: {}", stderr(&out));
}

#[test]
fn a_backup_replays_a_hostile_guest_to_its_primarys_state() {
    let _turn = ftvmm_tests::pair::serial();
    let topo = ftvmm_tests::netns::Topology::up();
    let dir = TempDir::new("hostile-pair");
    let n = nic::BASE;
    let code = Asm::default()
        .store(MMIO_NOBODY, u64::MAX)
        .store(console::BASE + console::TX_ADDR, 0xFFFF_FFFF_FFFF_F000)
        .store(console::BASE + console::TX_LEN, u64::MAX)
        .store(n + nic::RX_RING, 0x20_0000)
        .store(n + nic::TX_RING, 0x20_0000)
        .store(n + nic::SHARED, 0x20_0000)
        .store(n + nic::RING_SLOTS, 1)
        .store(n + nic::ENABLE, 1)
        .store(0x20_0000 + nic::SHARED_TX_PROD, 0xFFFF_FFFF)
        .store(n + nic::TX_KICK, 1)
        .exit_forever();
    let kernel = dir.path("pair.elf");
    std::fs::write(&kernel, elf(&code)).expect("write the kernel");
    let mut pair = ftvmm_tests::pair::start_booted(&topo, &["--kernel", path_str(&kernel), "--stop-at-exit", "3000"]);
    let digest = |vm: &mut ftvmm_tests::vm::VmProcess| {
        let status = vm.wait(Duration::from_secs(20)).expect("the VMM stops at exit 3000");
        let err = vm.stderr();
        assert!(!err.contains("panicked"), "a VMM panicked: {err}");
        assert_eq!(status.code(), Some(0), "{err}");
        vm.stdout_lines(Duration::from_millis(200)).into_iter().find(|l| l.starts_with("state digest at exit"))
    };
    let primary = digest(&mut pair.primary).expect("the primary's digest");
    let backup = digest(&mut pair.backup).expect("the backup's digest");
    assert!(primary.starts_with("state digest at exit 3000: "), "{primary}");
    assert_eq!(primary, backup, "the backup replayed the hostile guest to the same state");
}
