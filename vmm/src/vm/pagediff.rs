//! What a joiner already has, page by page: the list of its non-zero pages with
//! a short hash of each (`Have` frames, `logging_channel::state`), and the
//! sender's view of it. A state transfer then moves only the pages that differ
//! (see [`crate::vm::snapshot`]).
//!
//! ```text
//!   joiner: for each non-zero page n (ascending): (n as u32, blake3(page)[..16])
//!           -> Have{last: false, <= MAX_HAVE entries} ... Have{last: true, ...}
//!   sender: Theirs[n] = Some(hash) | None (zero there), for n < its own page count
//! ```
//!
//! The list is checked as it is read: page numbers strictly ascending and inside
//! the sender's memory, at most one entry per page. A hostile or confused joiner
//! can make the sender allocate at most one slot per page of the sender's own
//! memory, whatever it claims.
use crate::vm::digest;
use logging_channel::state::{self, PageHash, StateMessage, StateReader, MAX_HAVE, PAGE_SIZE};
use logging_channel::CodecError;
use std::io::{Read, Write};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why a page list could not be made, sent or read.
#[derive(Debug, thiserror::Error)]
pub enum PageDiffError {
    #[error("reading guest memory to hash its pages failed: {0}")]
    Memory(#[from] vm_memory::guest_memory::Error),
    #[error("sending this VM's page list failed: {0}")]
    Send(#[source] std::io::Error),
    #[error("the joiner's page list is unreadable: {0}")]
    Codec(#[from] CodecError),
    #[error("the joiner's page list is wrong: {0}; it is not a VM of this shape (start it with the same --mem-mib)")]
    Protocol(String),
}

/// A VM's non-zero pages and their hashes, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaveList(pub Vec<(u32, PageHash)>);

/// A page list hashed ahead of time (while a restarted follower waits for its
/// primary's answer), with the exit its VM stood at then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The exit the vCPU stood at, stopped, while its memory was hashed.
    pub exit: u64,
    pub list: HaveList,
}

impl Prepared {
    /// The list, if the VM still stands at the exit it was hashed at. `None` if it ran
    /// on since: its memory may have changed, and a list that says otherwise makes the
    /// primary skip pages the joiner no longer holds (its digest check then fails).
    pub fn still_at(self, exit: u64) -> Option<HaveList> {
        (self.exit == exit).then_some(self.list)
    }
}

/// A page's short hash.
pub fn page_hash(page: &[u8]) -> PageHash {
    let full = blake3::hash(page);
    full.as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

/// Hashes every non-zero page of `mem`.
pub fn have_list(mem: &GuestMemoryMmap) -> Result<HaveList, PageDiffError> {
    let mut list = Vec::new();
    digest::for_each_page(mem, |number, page| {
        if !digest::is_zero(page) {
            list.push((number as u32, page_hash(page)));
        }
        Ok::<(), PageDiffError>(())
    })?;
    Ok(HaveList(list))
}

/// The pages in `mem`.
pub fn page_count(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum::<u64>() / PAGE_SIZE as u64
}

/// Sends `list` as `Have` frames (one empty frame if it is empty). Returns the bytes sent.
pub fn send_have(out: &mut impl Write, list: &HaveList) -> Result<u64, PageDiffError> {
    let mut buf = Vec::new();
    let chunks: Vec<&[(u32, PageHash)]> = if list.0.is_empty() { vec![&[]] } else { list.0.chunks(MAX_HAVE).collect() };
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        state::encode(&StateMessage::Have { last: i + 1 == n, pages: chunk.to_vec() }, &mut buf);
    }
    out.write_all(&buf).and_then(|()| out.flush()).map_err(PageDiffError::Send)?;
    Ok(buf.len() as u64)
}

/// What the joiner has, as the sender sees it: slot `n` holds the hash of the joiner's
/// page `n`, or `None` where the joiner's page is zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theirs {
    pages: Vec<Option<PageHash>>,
    /// The bytes the list took on the wire.
    pub bytes: u64,
}

impl Theirs {
    /// The joiner's hash of page `n`, if it has that page non-zero.
    pub fn get(&self, n: u64) -> Option<&PageHash> {
        self.pages.get(n as usize).and_then(Option::as_ref)
    }

    /// One slot per page of the sender's memory: the joiner's hash, or `None` (zero).
    pub fn into_slots(self) -> Vec<Option<PageHash>> {
        self.pages
    }

    /// How many non-zero pages the joiner has.
    pub fn count(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }
}

/// Reads the joiner's `Have` frames for a VM of `pages` pages.
pub fn read_have(input: &mut impl Read, pages: u64) -> Result<Theirs, PageDiffError> {
    let mut reader = StateReader::new(input);
    let mut theirs = Theirs { pages: vec![None; pages as usize], bytes: 0 };
    let mut next: u64 = 0;
    loop {
        let message = reader
            .next_message()?
            .ok_or_else(|| PageDiffError::Protocol("the joiner closed the connection in its page list".into()))?;
        let StateMessage::Have { last, pages: entries } = message else {
            return Err(PageDiffError::Protocol("expected its page list (Have), got another state message".into()));
        };
        // A frame: len u32 | tag | last | count u32 | entries | crc u32.
        theirs.bytes += 14 + 20 * entries.len() as u64;
        for (page, hash) in entries {
            let page = u64::from(page);
            if page < next {
                return Err(PageDiffError::Protocol(format!("page {page} listed out of order")));
            }
            let slot = theirs
                .pages
                .get_mut(page as usize)
                .ok_or_else(|| PageDiffError::Protocol(format!("page {page} lies outside this VM's {pages} pages")))?;
            *slot = Some(hash);
            next = page + 1;
        }
        if last {
            return Ok(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pages: &[u32]) -> HaveList {
        HaveList(pages.iter().map(|&p| (p, [p as u8; 16])).collect())
    }

    #[test]
    fn a_page_list_round_trips_across_frames() {
        let many: Vec<u32> = (0..(MAX_HAVE as u32 + 10)).map(|p| p * 2).collect();
        for l in [list(&[]), list(&[0, 5, 9]), list(&many)] {
            let mut wire = Vec::new();
            send_have(&mut wire, &l).expect("send");
            let theirs = read_have(&mut wire.as_slice(), 2 * MAX_HAVE as u64 + 40).expect("read");
            assert_eq!(theirs.count(), l.0.len());
            for (p, h) in &l.0 {
                assert_eq!(theirs.get(u64::from(*p)), Some(h));
            }
            assert_eq!(theirs.bytes, wire.len() as u64);
        }
    }

    #[test]
    fn a_list_hashed_at_an_exit_the_vm_has_run_past_is_not_used() {
        let prepared = Prepared { exit: 41, list: list(&[1, 2]) };
        assert_eq!(prepared.clone().still_at(41), Some(list(&[1, 2])));
        assert_eq!(prepared.clone().still_at(42), None, "the guest ran on: hash again");
        assert_eq!(prepared.still_at(40), None);
    }

    #[test]
    fn pages_outside_memory_out_of_order_or_a_list_cut_short_are_refused() {
        let mut wire = Vec::new();
        send_have(&mut wire, &list(&[3, 16])).expect("send");
        let err = read_have(&mut wire.as_slice(), 16).unwrap_err();
        assert!(err.to_string().contains("outside this VM's 16 pages"), "{err}");

        let mut wire = Vec::new();
        state::encode(&StateMessage::Have { last: true, pages: vec![(5, [0; 16]), (5, [1; 16])] }, &mut wire);
        assert!(read_have(&mut wire.as_slice(), 16).unwrap_err().to_string().contains("out of order"));

        let mut wire = Vec::new();
        state::encode(&StateMessage::Have { last: false, pages: vec![(1, [0; 16])] }, &mut wire);
        assert!(read_have(&mut wire.as_slice(), 16).unwrap_err().to_string().contains("closed the connection"));
    }
}
