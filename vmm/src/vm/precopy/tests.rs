//! The copying half of a pre-copy without KVM: rounds of pages into a byte stream,
//! applied to another memory the way a joiner applies them.
use super::*;
use logging_channel::state::StateReader;
use vm_memory::GuestMemoryMmap;

const PAGES: u64 = 1024;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (PAGES * PAGE_SIZE as u64) as usize)]).expect("memory")
}

fn fill(mem: &GuestMemoryMmap, page: u64, byte: u8) {
    mem.write_slice(&[byte; PAGE_SIZE], GuestAddress(page * PAGE_SIZE as u64)).expect("write");
}

/// What the joiner does with Pages and Zero frames.
fn apply(stream: &[u8], mem: &GuestMemoryMmap) -> usize {
    let mut reader = StateReader::new(stream);
    let mut frames = 0;
    while let Some(m) = reader.next_message().expect("a readable stream") {
        frames += 1;
        match m {
            StateMessage::Pages { first_page, data } => {
                assert!(data.len() <= MAX_PAGES * PAGE_SIZE, "a run longer than a frame may hold");
                mem.write_slice(&data, GuestAddress(first_page * PAGE_SIZE as u64)).expect("write");
            }
            StateMessage::Zero { first_page, count } => {
                snapshot::zero_range(mem, first_page * PAGE_SIZE as u64, u64::from(count) * PAGE_SIZE as u64)
                    .expect("zero");
            }
            other => panic!("only pages in a round, got {other:?}"),
        }
    }
    frames
}

fn pages(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    digest::for_each_page(mem, |_, p| {
        all.push(p.to_vec());
        Ok::<(), vm_memory::guest_memory::Error>(())
    })
    .expect("read");
    all
}

fn sync_for(joiner: &GuestMemoryMmap) -> PageSync {
    let mut wire = Vec::new();
    pagediff::send_have(&mut wire, &pagediff::have_list(joiner).expect("hash")).expect("list");
    PageSync::new(pagediff::read_have(&mut wire.as_slice(), PAGES).expect("read list").into_slots())
}

#[test]
fn rounds_of_written_pages_bring_the_joiner_to_the_senders_memory() {
    let (sender, joiner) = (memory(), memory());
    for p in 0..40 {
        fill(&sender, p, 1);
    }
    for p in 20..60 {
        fill(&joiner, p, if p < 30 { 1 } else { 9 }); // 20..30 the same, 30..60 not
    }
    let mut sync = sync_for(&joiner);
    let mut stream = Vec::new();
    let mut wire = Wire::packed(&mut stream);
    let mut runs = Runs::default();
    digest::for_each_page(&sender, |n, page| runs.visit(&mut wire, &mut sync, n, page)).expect("round 0");
    runs.finish(&mut wire).expect("finish");
    wire.flush().expect("flush");
    // Round 0 sends 0..20 and 30..40, clears 40..60, and finds 20..30 the same.
    assert_eq!((runs.sent, runs.same), (30, 10));

    // The guest writes while round 0 runs; the dirty log lists those pages (and one it
    // wrote with the same bytes again, and one beyond memory that must be ignored).
    fill(&sender, 5, 2);
    fill(&sender, 7, 0);
    fill(&sender, 500, 3);
    fill(&sender, 25, 1);
    let runs = send_listed(&mut wire, &sender, &mut sync, &[5, 7, 25, 500, PAGES + 3]).expect("round 1");
    wire.flush().expect("flush");
    assert_eq!(runs.sent, 2, "page 7 is cleared, page 25 is the same");
    assert_eq!(runs.same, 1);

    apply(&stream, &joiner);
    assert!(pages(&sender) == pages(&joiner), "the joiner holds the sender's memory");
    let non_zero: Vec<u64> = (0..PAGES).filter(|&n| n != 7 && (n < 40 || n == 500)).collect();
    assert_eq!(sync.non_zero().collect::<Vec<_>>(), non_zero, "the record of the joiner is exact");
}

#[test]
fn a_run_past_a_frames_page_limit_is_split() {
    let (sender, joiner) = (memory(), memory());
    let n = MAX_PAGES as u64 * 2 + 1;
    for p in 0..n {
        fill(&sender, p, 4);
    }
    let mut sync = sync_for(&joiner);
    let mut stream = Vec::new();
    let mut wire = Wire::packed(&mut stream);
    let listed: Vec<u64> = (0..n).collect();
    let runs = send_listed(&mut wire, &sender, &mut sync, &listed).expect("round");
    wire.flush().expect("flush");
    assert_eq!(runs.sent, n);
    assert!(wire.bytes * 10 < wire.raw, "{} bytes packed of {}: pages of one byte repeated", wire.bytes, wire.raw);
    assert_eq!(apply(&stream, &joiner), 3, "255 + 255 + 1 pages: three frames");
    assert!(pages(&sender) == pages(&joiner));
}
