use super::*;
use crate::vm::guest_image;
use crate::vm::machine::{Machine, MachineConfig};
use guest_abi::{NetConfig, Workload};
use vm_memory::{Bytes, GuestAddress};

fn machine(mem_mib: u64) -> Machine {
    let config = MachineConfig {
        mem_size: mem_mib << 20,
        tick_hz: 250,
        workload: Workload::SelfTest,
        net: NetConfig::default(),
    };
    Machine::new(&config, &guest_image::load(None).expect("guest image")).expect("a VM (needs /dev/kvm)")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftvmm-ckpt-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn checkpointer(dir: &Path, m: &Machine) -> Checkpointer {
    Checkpointer::new(dir, m.header, Duration::from_secs(3600), Box::new(|_| {})).expect("checkpointer")
}

fn digest_of(m: &Machine) -> logging_channel::Hash {
    digest::state_digest(&m.vcpu, &m.mem).expect("digest")
}

#[test]
fn a_header_round_trips_and_any_flipped_byte_is_refused() {
    let machine = LogHeader { guest_image_digest: [1; 32], mem_size: 64 << 20, cpuid_digest: [2; 32], tick_hz: 250 };
    for base in [None, Some(77)] {
        let h = CheckpointHeader { base, machine };
        assert_eq!(CheckpointHeader::from_bytes(&h.to_bytes()).ok(), Some(h));
    }
    let bytes = CheckpointHeader { base: Some(5), machine }.to_bytes();
    for i in 0..HEADER_LEN {
        let mut bad = bytes;
        bad[i] ^= 0x40;
        assert!(CheckpointHeader::from_bytes(&bad).is_err(), "byte {i} flipped");
    }
    assert_eq!(parse_name(&file_name(12)), Some(12));
    assert_eq!(parse_name("ckpt-12.ftck.tmp"), None);
}

#[test]
fn deltas_hold_only_changed_pages_and_a_chain_restores_the_exact_state() {
    let dir = scratch("chain");
    let mut m = machine(16);
    let mut c = checkpointer(&dir, &m);
    let full = c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 10, 1, false).expect("full");
    m.mem.write_slice(&[7u8; 4096], GuestAddress(8 << 20)).expect("write");
    let delta = c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 20, 1, false).expect("delta");
    // A page that goes back to zero is cleared by the delta.
    m.mem.write_slice(&[0u8; 4096], GuestAddress(8 << 20)).expect("write");
    m.mem.write_slice(&[9u8; 8192], GuestAddress(9 << 20)).expect("write");
    let delta2 = c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 30, 2, false).expect("delta");
    let want = digest_of(&m);
    drop(c);

    assert!(full.full && !delta.full && !delta2.full);
    assert!(full.pages > 10, "the guest image's pages: {}", full.pages);
    assert_eq!((delta.pages, delta2.pages), (1, 2), "only what changed");
    assert!(delta2.bytes < full.bytes / 4, "{} vs {}", delta2.bytes, full.bytes);

    let mut fresh = machine(16);
    let r = restore_newest(&dir, &fresh.header, &mut fresh.vcpu, &fresh.mem, &mut fresh.buses.mmio).expect("restore");
    assert_eq!(r.at, Some((30, 2)));
    assert_eq!(digest_of(&fresh), want);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_newest_checkpoint_falls_back_to_the_previous_and_an_interrupted_write_is_ignored() {
    let dir = scratch("torn");
    let mut m = machine(16);
    let mut c = checkpointer(&dir, &m);
    c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 10, 1, false).expect("full");
    let at_10 = digest_of(&m);
    m.mem.write_slice(&[7u8; 4096], GuestAddress(8 << 20)).expect("write");
    c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 20, 1, false).expect("delta");
    drop(c);
    let newest = dir.join(file_name(20));
    let len = fs::metadata(&newest).expect("file").len();
    fs::OpenOptions::new().write(true).open(&newest).expect("open").set_len(len - 100).expect("cut");
    fs::write(dir.join(format!("{}.tmp", file_name(30))), b"half a checkpoint").expect("tmp");

    let mut fresh = machine(16);
    let r = restore_newest(&dir, &fresh.header, &mut fresh.vcpu, &fresh.mem, &mut fresh.buses.mmio).expect("restore");
    assert_eq!(r.at, Some((10, 1)));
    assert_eq!(digest_of(&fresh), at_10);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(r.skipped[0].contains("damaged"), "{:?}", r.skipped);
    assert_eq!(r.interrupted.len(), 1);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_of_another_memory_size_is_refused_with_what_to_do() {
    let dir = scratch("foreign");
    let mut m = machine(16);
    checkpointer(&dir, &m).take(&mut m.vcpu, &m.mem, &m.buses.mmio, 10, 1, true).expect("take");
    let mut other = machine(32);
    let err = restore_newest(&dir, &other.header, &mut other.vcpu, &other.mem, &mut other.buses.mmio).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("another VM") && text.contains("memory size"), "{text}");
    assert!(text.contains("own --data-dir"), "{text}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn after_max_chain_deltas_the_next_checkpoint_is_full_and_old_chains_are_deleted() {
    let dir = scratch("prune");
    let mut m = machine(16);
    let mut c = checkpointer(&dir, &m);
    let mut fulls = Vec::new();
    for i in 0..(2 * (MAX_CHAIN as u64 + 1) + 1) {
        m.mem.write_slice(&[i as u8 + 1; 4096], GuestAddress(8 << 20)).expect("write");
        let t = c.take(&mut m.vcpu, &m.mem, &m.buses.mmio, 10 + i, 1, false).expect("take");
        if t.full {
            fulls.push(i);
        }
    }
    drop(c);
    assert_eq!(fulls, vec![0, MAX_CHAIN as u64 + 1, 2 * (MAX_CHAIN as u64 + 1)]);
    let mut left: Vec<u64> =
        fs::read_dir(&dir).expect("dir").flatten().filter_map(|e| parse_name(e.file_name().to_str()?)).collect();
    left.sort_unstable();
    // The newest (a full one) and the previous one's chain, nothing older.
    let newest = 10 + 2 * (MAX_CHAIN as u64 + 1);
    let previous_chain: Vec<u64> = (10 + MAX_CHAIN as u64 + 1..newest).collect();
    assert_eq!(left, [previous_chain, vec![newest]].concat());
    let _ = fs::remove_dir_all(&dir);
}
