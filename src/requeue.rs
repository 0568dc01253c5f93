//! When each org is next reconciled without a change: a compact schedule beside the
//! controller, which also paces the orgs it hands over.
//!
//! kube-runtime's own requeue (an `Action::requeue`) keeps a delay-queue entry and two map
//! entries per object, each with a full `ObjectRef` (name, namespace, resourceVersion and uid
//! as separate strings): about 1.5 KiB per org, since every org always has a next check, and
//! its queue keeps that capacity after the cold start put every org in it at once. Here an
//! org costs one shared `"namespace/name"` string, its deadline in a map, and an entry in a
//! heap, about 150 bytes; and only a few orgs (64 in the controller) are handed to it at a
//! time (a cold start's initial list included), each until its reconcile ends. The
//! controller still runs at most one reconcile per org and merges a due org with a watch
//! event that arrives at the same time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// An org, as `"namespace/name"` (a name has no `/`).
type Key = Arc<str>;

/// An org handed over and never reconciled (deleted meanwhile, or dropped by a stopping
/// controller) stops counting against the limit after this long.
const HANDED_OVER_FOR: Duration = Duration::from_secs(60);

/// The schedule; cheap to share between the reconciler and the stream of due orgs.
pub struct Requeues {
    inner: Mutex<Inner>,
    changed: Notify,
    /// Orgs handed to the controller and not yet reconciled, at most (the controller passes
    /// twice its concurrency: enough to keep it busy, without queueing the fleet inside it).
    in_flight: usize,
}

#[derive(Default)]
struct Inner {
    /// The one current deadline of each scheduled org.
    due: HashMap<Key, Instant>,
    /// Deadlines in order; an entry whose deadline is no longer the org's is skipped when it
    /// comes up (rescheduling does not search the heap).
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Handed to the controller and not yet reconciled, since when.
    handed_over: HashMap<Key, Instant>,
}

impl Requeues {
    /// An empty schedule handing over at most `in_flight` orgs at a time.
    pub fn new(in_flight: usize) -> Self {
        Self {
            inner: Mutex::default(),
            changed: Notify::new(),
            in_flight: in_flight.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent enough to go on with.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconciles the org `after` from now, replacing what was scheduled for it.
    pub fn schedule(&self, namespace: &str, name: &str, after: Duration) {
        let at = Instant::now() + after;
        let mut inner = self.lock();
        let key = match inner.due.get_key_value(key_of(namespace, name).as_ref()) {
            Some((key, _)) => key.clone(),
            None => key_of(namespace, name),
        };
        let sooner = inner
            .heap
            .peek()
            .is_none_or(|Reverse((first, _))| at < *first);
        inner.due.insert(key.clone(), at);
        inner.heap.push(Reverse((at, key)));
        inner.compact();
        drop(inner);
        if sooner {
            self.changed.notify_one();
        }
    }

    /// Forgets the org (it is gone, or waits only for changes).
    pub fn cancel(&self, namespace: &str, name: &str) {
        let key = key_of(namespace, name);
        let mut inner = self.lock();
        inner.due.remove(key.as_ref());
        let released = inner.handed_over.remove(key.as_ref()).is_some();
        inner.compact();
        drop(inner);
        if released {
            self.changed.notify_one();
        }
    }

    /// Marks the end of the org's reconcile, however it ended.
    pub fn done(&self, namespace: &str, name: &str) {
        let released = self
            .lock()
            .handed_over
            .remove(key_of(namespace, name).as_ref())
            .is_some();
        if released {
            self.changed.notify_one();
        }
    }

    /// Forgets every org not among `live` (namespace, name) pairs.
    pub fn retain<'a>(&self, live: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let live: HashSet<Key> = live
            .into_iter()
            .map(|(namespace, name)| key_of(namespace, name))
            .collect();
        let mut inner = self.lock();
        inner.due.retain(|key, _| live.contains(key.as_ref()));
        inner
            .handed_over
            .retain(|key, _| live.contains(key.as_ref()));
        inner.compact();
        drop(inner);
        self.changed.notify_one();
    }

    /// How many orgs are scheduled.
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The orgs whose time has come, as `(namespace, name)`, each once per schedule and at
    /// most `in_flight` until [`Requeues::done`].
    pub fn due(self: Arc<Self>) -> impl Stream<Item = (String, String)> + Send + 'static {
        futures::stream::unfold(
            (self, Vec::<Key>::new()),
            |(requeues, mut ready)| async move {
                loop {
                    if let Some(key) = ready.pop() {
                        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
                        let item = (ns.to_owned(), name.to_owned());
                        return Some((item, (requeues, ready)));
                    }
                    // Registered before looking, so a schedule made meanwhile wakes us.
                    let changed = requeues.changed.notified();
                    let next = {
                        let mut inner = requeues.lock();
                        let now = Instant::now();
                        inner
                            .handed_over
                            .retain(|_, at| now < *at + HANDED_OVER_FOR);
                        ready = inner.pop_due(now, requeues.in_flight);
                        if inner.handed_over.len() >= requeues.in_flight {
                            // Full: wait for a reconcile to end (or a hand-over to lapse).
                            inner
                                .handed_over
                                .values()
                                .min()
                                .map(|at| *at + HANDED_OVER_FOR)
                        } else {
                            inner.heap.peek().map(|Reverse((at, _))| *at)
                        }
                    };
                    if !ready.is_empty() {
                        continue;
                    }
                    match next {
                        Some(at) => {
                            tokio::select! {
                                () = tokio::time::sleep_until(at) => {}
                                () = changed => {}
                            }
                        }
                        None => changed.await,
                    }
                }
            },
        )
    }
}

impl Inner {
    /// Takes the orgs due by `now` off the schedule and hands them over, while fewer than
    /// `in_flight` are.
    fn pop_due(&mut self, now: Instant, in_flight: usize) -> Vec<Key> {
        let mut ready = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now || self.handed_over.len() >= in_flight {
                break;
            }
            let Some(Reverse((at, key))) = self.heap.pop() else {
                break;
            };
            if self.due.get(&key) == Some(&at) {
                self.due.remove(&key);
                self.handed_over.insert(key.clone(), now);
                ready.push(key);
            }
        }
        // Handed out last first: reversed, so `pop` yields them in deadline order.
        ready.reverse();
        ready
    }

    /// Rebuilds the heap from the map once skipped entries outnumber live ones, so an org
    /// rescheduled often (watch echoes) does not grow it.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.due.len() + 64 {
            self.heap = self
                .due
                .iter()
                .map(|(key, at)| Reverse((*at, key.clone())))
                .collect();
        }
    }
}

fn key_of(namespace: &str, name: &str) -> Key {
    Arc::from(format!("{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    const IN_FLIGHT: usize = 64;

    #[tokio::test(start_paused = true)]
    async fn orgs_come_due_in_order_once_per_schedule() {
        let requeues = Arc::new(Requeues::new(IN_FLIGHT));
        requeues.schedule("a", "late", Duration::from_secs(30));
        requeues.schedule("a", "soon", Duration::from_secs(10));
        requeues.schedule("b", "moved", Duration::from_secs(5));
        // Rescheduled later: only the new deadline counts.
        requeues.schedule("b", "moved", Duration::from_secs(20));
        requeues.schedule("a", "gone", Duration::from_secs(1));
        requeues.cancel("a", "gone");
        let started = Instant::now();
        let mut due = std::pin::pin!(requeues.clone().due());
        let mut got = Vec::new();
        for _ in 0..3 {
            let (ns, name) = due.next().await.expect("an org");
            got.push((format!("{ns}/{name}"), started.elapsed().as_secs()));
        }
        assert_eq!(
            got,
            [
                ("a/soon".to_owned(), 10),
                ("b/moved".to_owned(), 20),
                ("a/late".to_owned(), 30)
            ]
        );
        assert!(requeues.is_empty());
        // A schedule sooner than anything waited for wakes the stream.
        requeues.schedule("c", "new", Duration::from_secs(3600));
        requeues.schedule("c", "urgent", Duration::from_secs(2));
        let (_, name) = due.next().await.expect("an org");
        assert_eq!((name.as_str(), started.elapsed().as_secs()), ("urgent", 32));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_in_flight_orgs_are_handed_over_until_their_reconcile_ends() {
        let requeues = Arc::new(Requeues::new(IN_FLIGHT));
        for i in 0..IN_FLIGHT + 3 {
            requeues.schedule("ns", &format!("org-{i:03}"), Duration::ZERO);
        }
        let mut due = std::pin::pin!(requeues.clone().due());
        let mut first = Vec::new();
        for _ in 0..IN_FLIGHT {
            first.push(due.next().await.expect("an org").1);
        }
        assert_eq!(first.first().map(String::as_str), Some("org-000"));
        // Full: nothing more until a reconcile ends.
        let waited = tokio::time::timeout(Duration::from_secs(5), due.next()).await;
        assert!(waited.is_err(), "handed over beyond the limit");
        requeues.done("ns", "org-000");
        let (_, next) = due.next().await.expect("an org");
        assert_eq!(next, format!("org-{IN_FLIGHT:03}"));
        // A hand-over never ended (the org was deleted meanwhile) lapses.
        let started = Instant::now();
        let (_, last) = due.next().await.expect("an org");
        assert_eq!(last, format!("org-{:03}", IN_FLIGHT + 1));
        assert!(started.elapsed() >= HANDED_OVER_FOR - Duration::from_secs(6));
    }

    #[test]
    fn rescheduling_often_keeps_the_heap_small() {
        let requeues = Requeues::new(IN_FLIGHT);
        for i in 0..10_000u64 {
            requeues.schedule("ns", &format!("org-{}", i % 10), Duration::from_secs(i));
        }
        let inner = requeues.lock();
        assert_eq!(inner.due.len(), 10);
        assert!(inner.heap.len() <= 2 * 10 + 64 + 1, "{}", inner.heap.len());
    }

    #[test]
    fn orgs_no_longer_live_are_forgotten() {
        let requeues = Requeues::new(IN_FLIGHT);
        requeues.schedule("ns", "kept", Duration::from_secs(1));
        requeues.schedule("ns", "deleted", Duration::from_secs(1));
        requeues.retain([("ns", "kept")]);
        assert_eq!(requeues.len(), 1);
    }
}
