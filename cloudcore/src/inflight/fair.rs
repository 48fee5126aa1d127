//! A fair work queue keyed by node: each node's items wait in their own FIFO, nodes with work
//! take turns (round robin, one item per turn), and a node has at most `per_key` items being
//! handled at once. Workers never sit on one node's backlog: after each item the node goes to
//! the back of the line. With `per_key` 1 a node's items are handled strictly in order, one at
//! a time (EdgeController's rule), and a flooding node occupies one worker at most.
//!
//! The queue takes what it is given ([`FairQueue::push`] waits only past [`MAX_PER_KEY`],
//! which the [`Admission`](super::Admission) in front of it keeps nodes far below): CloudHub
//! bounds each node's messages before they get here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Items one key may have queued before [`FairQueue::push`] waits (a backstop: CloudHub's
/// admission keeps a node to `nodeInFlight`).
pub const MAX_PER_KEY: usize = 1024;

struct Key<T> {
    items: VecDeque<T>,
    /// Items taken and not yet done.
    running: usize,
    /// Whether the key is in `ready`.
    ready: bool,
}

struct State<T> {
    keys: HashMap<String, Key<T>>,
    /// Keys with an item to take and a free turn, in turn order.
    ready: VecDeque<String>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    per_key: usize,
    /// Woken when a key becomes ready.
    work: Notify,
    /// Woken when an item is taken (room for a waiting push).
    room: Notify,
}

/// A fair queue (see the module docs). Cheap to clone.
pub struct FairQueue<T>(Arc<Shared<T>>);

impl<T> Clone for FairQueue<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> FairQueue<T> {
    /// A queue letting each key have `per_key` items handled at once.
    pub fn new(per_key: usize) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State { keys: HashMap::new(), ready: VecDeque::new() }),
            per_key: per_key.max(1),
            work: Notify::new(),
            room: Notify::new(),
        }))
    }

    /// Queues `item` behind `key`'s others; waits only while `key` has [`MAX_PER_KEY`] queued.
    pub async fn push(&self, key: &str, item: T) {
        let mut item = Some(item);
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut s = self.0.state.lock();
                let State { keys, ready } = &mut *s;
                let k = keys.entry(key.to_owned()).or_insert_with(|| Key {
                    items: VecDeque::new(),
                    running: 0,
                    ready: false,
                });
                if k.items.len() < MAX_PER_KEY {
                    k.items.extend(item.take());
                    if !k.ready && k.running < self.0.per_key {
                        k.ready = true;
                        ready.push_back(key.to_owned());
                        drop(s);
                        self.0.work.notify_one();
                    }
                    return;
                }
            }
            room.await;
        }
    }

    /// A worker: takes items in turn and gives each to `handle`, holding its key's turn until
    /// `handle` is done, until `stop` (looked at before each take, first).
    pub async fn work<F, Fut>(self, stop: CancellationToken, mut handle: F)
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let (item, turn) = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                t = self.take() => t,
            };
            handle(item).await;
            drop(turn);
        }
    }

    /// The next item in turn order, with the [`Turn`] to drop when it is handled. Waits for
    /// one; cancel-safe (nothing is taken until it returns).
    pub async fn take(&self) -> (T, Turn<T>) {
        loop {
            let work = self.0.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            {
                let mut s = self.0.state.lock();
                let State { keys, ready } = &mut *s;
                while let Some(key) = ready.pop_front() {
                    let Some(k) = keys.get_mut(&key) else { continue };
                    k.ready = false;
                    let Some(item) = k.items.pop_front() else { continue };
                    k.running += 1;
                    // More of this key, and a free turn: back in line, behind the others.
                    if !k.items.is_empty() && k.running < self.0.per_key {
                        k.ready = true;
                        ready.push_back(key.clone());
                    }
                    let more = !ready.is_empty();
                    drop(s);
                    if more {
                        // Another worker may take the next key at once.
                        self.0.work.notify_one();
                    }
                    self.0.room.notify_waiters();
                    return (item, Turn { queue: self.0.clone(), key: Some(key) });
                }
            }
            work.await;
        }
    }

    /// Items queued (not yet taken) in all keys.
    pub fn queued(&self) -> usize {
        self.0.state.lock().keys.values().map(|k| k.items.len()).sum()
    }
}

/// A taken item's turn: dropping it (the item handled, or given up) frees the key's turn.
pub struct Turn<T> {
    queue: Arc<Shared<T>>,
    key: Option<String>,
}

impl<T> Drop for Turn<T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut s = self.queue.state.lock();
        let State { keys, ready } = &mut *s;
        let Some(k) = keys.get_mut(&key) else { return };
        k.running = k.running.saturating_sub(1);
        if k.items.is_empty() && k.running == 0 {
            keys.remove(&key);
            return;
        }
        if !k.ready && !k.items.is_empty() && k.running < self.queue.per_key {
            k.ready = true;
            ready.push_back(key);
            drop(s);
            self.queue.work.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    async fn take<T>(q: &FairQueue<T>) -> (T, Turn<T>) {
        tokio::time::timeout(PATIENCE, q.take()).await.expect("an item")
    }

    #[tokio::test]
    async fn nodes_take_turns_and_each_keeps_its_order() {
        let q = FairQueue::new(1);
        for i in 0..100 {
            q.push("flood", ("flood", i)).await;
        }
        q.push("honest", ("honest", 0)).await;
        q.push("honest", ("honest", 1)).await;
        // One worker: the honest node's first item comes second, not after 100 of the flood.
        let (a, turn) = take(&q).await;
        assert_eq!(a, ("flood", 0));
        drop(turn);
        let (b, turn) = take(&q).await;
        assert_eq!(b, ("honest", 0));
        drop(turn);
        let (c, turn) = take(&q).await;
        assert_eq!(c, ("flood", 1));
        drop(turn);
        let (d, turn) = take(&q).await;
        assert_eq!(d, ("honest", 1));
        drop(turn);
        // The rest of the flood, in order.
        for i in 2..100 {
            let (x, turn) = take(&q).await;
            assert_eq!(x, ("flood", i));
            drop(turn);
        }
        assert_eq!(q.queued(), 0);
        assert!(q.0.state.lock().keys.is_empty(), "finished keys are forgotten");
    }

    #[tokio::test]
    async fn a_node_has_one_item_handled_at_a_time() {
        let q = FairQueue::new(1);
        q.push("a", 1).await;
        q.push("a", 2).await;
        q.push("b", 3).await;
        let (first, turn_a) = take(&q).await;
        assert_eq!(first, 1);
        // While `a`'s first is handled, a second worker gets `b`, never `a`'s next.
        let (second, turn_b) = take(&q).await;
        assert_eq!(second, 3);
        assert!(tokio::time::timeout(Duration::from_millis(50), q.take()).await.is_err(), "a waits for its turn");
        drop(turn_b);
        drop(turn_a);
        let (third, _turn) = take(&q).await;
        assert_eq!(third, 2);
    }

    #[tokio::test]
    async fn per_key_concurrency_above_one() {
        let q = FairQueue::new(2);
        for i in 0..3 {
            q.push("a", i).await;
        }
        let (x, tx) = take(&q).await;
        let (y, ty) = take(&q).await;
        assert_eq!((x, y), (0, 1));
        assert!(tokio::time::timeout(Duration::from_millis(50), q.take()).await.is_err(), "two at most");
        drop(tx);
        let (z, _tz) = take(&q).await;
        assert_eq!(z, 2);
        drop(ty);
    }

    #[tokio::test]
    async fn workers_wake_for_items_pushed_later() {
        let q: FairQueue<u32> = FairQueue::new(1);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let (item, _turn) = q.take().await;
                    item
                })
            })
            .collect();
        // Every worker waits in `take` (the test runtime has one thread).
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        for (i, node) in ["a", "b", "c", "d"].iter().enumerate() {
            q.push(node, i as u32).await;
        }
        let mut got = Vec::new();
        for w in workers {
            got.push(tokio::time::timeout(PATIENCE, w).await.expect("every worker woke").unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn push_waits_past_the_backstop() {
        let q = FairQueue::new(1);
        for i in 0..MAX_PER_KEY {
            q.push("a", i).await;
        }
        assert!(tokio::time::timeout(Duration::from_millis(50), q.push("a", MAX_PER_KEY)).await.is_err());
        // Another key is not held up.
        tokio::time::timeout(PATIENCE, q.push("b", 0)).await.expect("b passes");
        let (_, turn) = take(&q).await;
        drop(turn);
        tokio::time::timeout(PATIENCE, q.push("a", MAX_PER_KEY)).await.expect("room after a take");
    }
}
