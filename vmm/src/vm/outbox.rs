//! The vCPU's end of the output path: where output produced at a counted exit
//! goes, without waking a thread that has nothing to do with it.
//!
//! Output on a protected primary can leave only once followers acknowledged its
//! exit, and the thread that learns of the ack (`ack-rx`) releases it. Waking the
//! `output` thread for every item as well cost a futex wake on the vCPU and a
//! context switch per request on cores the vCPUs share. So the vCPU rings the
//! output thread's doorbell only when the releaser says it must
//! ([`OutboxReceiver::set_wake`]: output that leaves at once — no group, async,
//! no live follower — or after [`DRAIN_EVERY`] items pile up, as on a follower,
//! which drops its output until it goes live).
//!
//! No item can be stranded: the vCPU queues an item *before* it logs its exit,
//! so any ack that allows it comes after it is queued, and whoever releases on
//! that ack drains the queue first. When the releaser turns the doorbell on, it
//! drains again after the flag is visible; the vCPU reads the flag after queueing
//! (both sequentially consistent), so either the releaser sees the item or the
//! vCPU sees the flag.
use crate::vm::driver::OutputItem;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryIter};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

/// Queued items that ring the doorbell even when nobody asked for it, so the
/// queue of a VM whose output waits (a follower's) is trimmed now and then.
pub const DRAIN_EVERY: usize = 1024;

/// The vCPU's side.
pub struct Outbox {
    items: Sender<OutputItem>,
    doorbell: Sender<()>,
    wake: Arc<AtomicBool>,
}

/// The releaser's side: the queued items, the doorbell, and the flag that says
/// whether the vCPU must ring for every item.
pub struct OutboxReceiver {
    items: Receiver<OutputItem>,
    /// Readable when the vCPU rang; disconnected once the vCPU is gone.
    pub doorbell: Receiver<()>,
    wake: Arc<AtomicBool>,
}

/// A connected pair. The doorbell starts on: until the releaser knows better,
/// every item wakes it, as before there was a doorbell.
pub fn outbox() -> (Outbox, OutboxReceiver) {
    let (items_tx, items) = unbounded();
    // One pending ring is enough: the woken side drains everything queued.
    let (doorbell_tx, doorbell) = bounded(1);
    let wake = Arc::new(AtomicBool::new(true));
    (Outbox { items: items_tx, doorbell: doorbell_tx, wake: wake.clone() }, OutboxReceiver { items, doorbell, wake })
}

impl Outbox {
    /// Queues `item`, and rings if the releaser asked for every item or the queue is long.
    /// The VM does not care whether anyone is left to receive it (at shutdown, nobody is).
    pub fn send(&self, item: OutputItem) {
        if self.items.send(item).is_err() {
            return;
        }
        // Queue first, then read the flag: pairs with the fence in `set_wake`.
        fence(Ordering::SeqCst);
        if self.wake.load(Ordering::SeqCst) || self.items.len() >= DRAIN_EVERY {
            let _ = self.doorbell.try_send(());
        }
    }
}

impl OutboxReceiver {
    /// Everything queued now, oldest first.
    pub fn drain(&self) -> TryIter<'_, OutputItem> {
        self.items.try_iter()
    }

    /// Items queued and not yet drained.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Asks the vCPU to ring for every item (`true`) or only when [`DRAIN_EVERY`] pile
    /// up. Returns true when it was just turned on: the caller must then drain again,
    /// because an item queued before the vCPU saw the flag did not ring.
    pub fn set_wake(&self, wake: bool) -> bool {
        let was = self.wake.swap(wake, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        wake && !was
    }

    /// Whether the vCPU rings for every item now.
    pub fn wakes(&self) -> bool {
        self.wake.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::Output;
    use std::time::Instant;

    fn item(exit_index: u64) -> OutputItem {
        OutputItem { exit_index, output: Output::Console(vec![b'x']), produced: Instant::now() }
    }

    #[test]
    fn every_item_rings_while_the_releaser_asks_for_it() {
        let (tx, rx) = outbox();
        tx.send(item(1));
        assert!(rx.doorbell.try_recv().is_ok(), "the first item did not ring");
        tx.send(item(2));
        assert!(rx.doorbell.try_recv().is_ok(), "the second item did not ring");
        assert_eq!(rx.drain().map(|i| i.exit_index).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn items_that_wait_for_acks_ring_only_once_the_queue_reaches_the_limit() {
        let (tx, rx) = outbox();
        assert!(!rx.set_wake(false));
        for i in 1..DRAIN_EVERY as u64 {
            tx.send(item(i));
        }
        assert!(rx.doorbell.try_recv().is_err(), "{} waiting items rang", DRAIN_EVERY - 1);
        tx.send(item(DRAIN_EVERY as u64));
        assert!(rx.doorbell.try_recv().is_ok(), "{DRAIN_EVERY} waiting items did not ring");
        assert_eq!(rx.len(), DRAIN_EVERY);
    }

    #[test]
    fn turning_the_doorbell_on_tells_the_releaser_to_look_again() {
        let (tx, rx) = outbox();
        assert!(!rx.set_wake(false), "turning it off needs no second look");
        tx.send(item(7));
        assert!(rx.doorbell.try_recv().is_err());
        assert!(rx.set_wake(true), "turning it on must ask for a second look");
        assert!(!rx.set_wake(true), "it was on already");
        assert_eq!(rx.drain().map(|i| i.exit_index).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn a_vcpu_whose_releaser_is_gone_sends_into_nothing() {
        let (tx, rx) = outbox();
        drop(rx);
        tx.send(item(1));
    }
}
