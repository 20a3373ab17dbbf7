//! Model tests of the channel's lock-free path under shuttle's randomized scheduler
//! (`cargo test --features shuttle --lib events::hub::ring::model`): a reader that answers
//! "nothing new" without the lock, or a server turn that waits for `Deliveries`, must never miss
//! the wake-up that follows. A missed one leaves a thread parked for good, which shuttle reports
//! as a deadlock.

use std::future::poll_fn;

use shuttle::future::block_on;
use shuttle::thread;

use super::{Bounds, Hub};
use crate::events::hub::tests::{batch, seq};
use crate::events::hub::{RecvError, TryRecvError};

const ITERATIONS: usize = 2_000;

fn hub(batches: usize) -> Hub {
    Hub::new(Bounds {
        batches,
        bytes: usize::MAX,
    })
}

/// Every batch a writer publishes while readers poll reaches each reader once, in order.
#[test]
fn readers_see_every_batch_published_while_they_poll() {
    shuttle::check_random(
        || {
            let hub = hub(8);
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let mut subscription = hub.subscribe("run", usize::MAX).expect("subscribed");
                    thread::spawn(move || {
                        (0..3)
                            .map(|_| {
                                block_on(poll_fn(|cx| subscription.poll_recv(cx)))
                                    .map(|batch| seq(&batch))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let writer = {
                let hub = hub.clone();
                thread::spawn(move || (1..=3).for_each(|seq| hub.publish("run", batch(seq))))
            };
            writer.join().expect("writer");
            for reader in readers {
                assert_eq!(reader.join().expect("reader"), vec![Ok(1), Ok(2), Ok(3)]);
            }
        },
        ITERATIONS,
    );
}

/// A reader that subscribes while a writer publishes reads, in order, exactly the batches
/// published after it subscribed: never one from before, never a gap.
#[test]
fn a_reader_subscribing_during_publication_reads_what_follows() {
    shuttle::check_random(
        || {
            let hub = hub(8);
            let _first = hub.subscribe("run", usize::MAX).expect("subscribed");
            let late = {
                let hub = hub.clone();
                thread::spawn(move || {
                    let mut subscription = hub.subscribe("run", usize::MAX).expect("subscribed");
                    let mut seqs = Vec::new();
                    while seqs.last() != Some(&4) {
                        let batch = block_on(poll_fn(|cx| subscription.poll_recv(cx)));
                        seqs.push(seq(&batch.expect("a batch")));
                    }
                    seqs
                })
            };
            let writer = {
                let hub = hub.clone();
                thread::spawn(move || (1..=3).for_each(|seq| hub.publish("run", batch(seq))))
            };
            writer.join().expect("writer");
            // One more, so a reader that came after the third still gets a batch.
            hub.publish("run", batch(4));
            let seqs = late.join().expect("late reader");
            let first = seqs[0];
            assert_eq!(seqs, (first..=4).collect::<Vec<_>>(), "in order, no gap");
        },
        ITERATIONS,
    );
}

/// A reader waiting when the hub closes reads what was published, then learns it closed.
#[test]
fn a_waiting_reader_learns_of_close() {
    shuttle::check_random(
        || {
            let hub = hub(8);
            let mut subscription = hub.subscribe("run", usize::MAX).expect("subscribed");
            let reader = thread::spawn(move || {
                let mut seqs = Vec::new();
                loop {
                    match block_on(poll_fn(|cx| subscription.poll_recv(cx))) {
                        Ok(batch) => seqs.push(seq(&batch)),
                        Err(error) => return (seqs, error),
                    }
                }
            });
            hub.publish("run", batch(1));
            hub.close();
            assert_eq!(reader.join().expect("reader"), (vec![1], RecvError::Closed));
        },
        ITERATIONS,
    );
}

/// Readers leaving while a writer publishes: the channel's accounting comes back to nothing
/// held once the last reader has read or left.
#[test]
fn readers_leaving_during_publication_leave_nothing_held() {
    shuttle::check_random(
        || {
            let hub = hub(2);
            let mut staying = hub.subscribe("run", usize::MAX).expect("subscribed");
            let leaving = hub.subscribe("run", usize::MAX).expect("subscribed");
            let channel = super::lock(&hub.inner.channels)["run"].clone();
            let writer = {
                let hub = hub.clone();
                thread::spawn(move || (1..=3).for_each(|seq| hub.publish("run", batch(seq))))
            };
            let leaver = thread::spawn(move || drop(leaving));
            writer.join().expect("writer");
            leaver.join().expect("leaver");
            // The staying reader may have fallen behind the two kept batches; it reads the rest.
            loop {
                match staying.try_recv() {
                    Ok(_) | Err(TryRecvError::Recv(RecvError::Lagged(_))) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(error) => panic!("unexpected {error:?}"),
                }
            }
            let ring = super::lock(&channel.ring);
            assert_eq!((ring.bytes, ring.slots.len()), (0, 0));
            assert_eq!(ring.subscribers, 1);
        },
        ITERATIONS,
    );
}

/// A server turn that found a publication waking subscribers is woken when it ends.
#[test]
fn a_turn_waiting_for_deliveries_is_woken() {
    shuttle::check_random(
        || {
            let hub = hub(8);
            let deliveries = hub.deliveries();
            let publisher = {
                let deliveries = deliveries.clone();
                thread::spawn(move || drop(deliveries.begin()))
            };
            let waiter = thread::spawn(move || block_on(poll_fn(|cx| deliveries.poll_idle(cx))));
            publisher.join().expect("publisher");
            waiter.join().expect("waiter");
        },
        ITERATIONS,
    );
}
