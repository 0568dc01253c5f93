//! Watching a list of namespaces as one: a watch per namespace (so a Role in each is all the
//! operator needs, never cluster-wide access), merged into the event stream of a single
//! reflector store and controller.
//!
//! A reflector replaces its whole store when a watch finishes listing. With several watches
//! feeding one store, one namespace's re-list would wipe the others, so the merge speaks to
//! the store as one watch would: a single initial list once every namespace has listed, and
//! afterwards a namespace's re-list becomes updates plus deletions of what it no longer has.

use std::collections::{HashMap, HashSet, VecDeque};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event};

/// One namespace's watch.
pub type NamespaceWatch<K> = (String, BoxStream<'static, watcher::Result<Event<K>>>);

/// The watches as one stream for one reflector; `store` is that reflector's reader (read to
/// find what a re-listed namespace no longer has). A single watch is returned as it is.
pub fn merge<K>(
    mut watches: Vec<NamespaceWatch<K>>,
    store: Store<K>,
) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    if watches.len() <= 1 {
        return match watches.pop() {
            Some((_, watch)) => watch,
            None => stream::empty().boxed(),
        };
    }
    let namespaces: Vec<String> = watches.iter().map(|(ns, _)| ns.clone()).collect();
    let tagged = stream::select_all(
        watches
            .into_iter()
            .enumerate()
            .map(|(i, (_, watch))| watch.map(move |event| (i, event)).boxed()),
    );
    let merger = Merger::new(namespaces, store);
    stream::unfold((tagged, merger), |(mut tagged, mut merger)| async move {
        loop {
            if let Some(out) = merger.out.pop_front() {
                return Some((out, (tagged, merger)));
            }
            let (i, item) = tagged.next().await?;
            match item {
                Ok(event) => merger.on_event(i, event),
                Err(e) => merger.out.push_back(Err(e)),
            }
        }
    })
    .boxed()
}

/// Until every namespace has listed once: what each holds.
struct Initial<K> {
    objects: HashMap<String, K>,
    listed: bool,
}

struct Merger<K: kube::Resource<DynamicType = ()> + 'static> {
    namespaces: Vec<String>,
    store: Store<K>,
    /// `Some` until the first complete list of every namespace has gone out.
    initial: Option<Vec<Initial<K>>>,
    /// Per namespace, the names seen by a re-list in progress.
    relisting: Vec<Option<HashSet<String>>>,
    out: VecDeque<watcher::Result<Event<K>>>,
}

impl<K> Merger<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(namespaces: Vec<String>, store: Store<K>) -> Self {
        let n = namespaces.len();
        Self {
            namespaces,
            store,
            initial: Some(
                (0..n)
                    .map(|_| Initial {
                        objects: HashMap::new(),
                        listed: false,
                    })
                    .collect(),
            ),
            relisting: vec![None; n],
            out: VecDeque::new(),
        }
    }

    fn on_event(&mut self, i: usize, event: Event<K>) {
        if let Some(initial) = self.initial.as_mut() {
            let ns = &mut initial[i];
            match event {
                Event::Init => {
                    ns.objects.clear();
                    ns.listed = false;
                }
                Event::InitApply(obj) | Event::Apply(obj) => {
                    ns.objects.insert(obj.name_any(), obj);
                }
                Event::Delete(obj) => {
                    ns.objects.remove(&obj.name_any());
                }
                Event::InitDone => ns.listed = true,
            }
            if initial.iter().all(|ns| ns.listed) {
                self.out.push_back(Ok(Event::Init));
                for ns in initial.drain(..) {
                    self.out
                        .extend(ns.objects.into_values().map(|o| Ok(Event::InitApply(o))));
                }
                self.out.push_back(Ok(Event::InitDone));
                self.initial = None;
            }
            return;
        }
        match event {
            Event::Init => self.relisting[i] = Some(HashSet::new()),
            Event::InitApply(obj) => {
                if let Some(seen) = self.relisting[i].as_mut() {
                    seen.insert(obj.name_any());
                }
                self.out.push_back(Ok(Event::Apply(obj)));
            }
            Event::InitDone => {
                let seen = self.relisting[i].take().unwrap_or_default();
                let ns = self.namespaces[i].as_str();
                // Everything emitted before this event has reached the store already.
                let gone = self.store.state().into_iter().filter(|obj| {
                    obj.namespace().as_deref() == Some(ns) && !seen.contains(&obj.name_any())
                });
                for obj in gone {
                    self.out.push_back(Ok(Event::Delete((*obj).clone())));
                }
            }
            event @ (Event::Apply(_) | Event::Delete(_)) => self.out.push_back(Ok(event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Error;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.name = Some(name.into());
        cm.data = Some([("v".to_owned(), v.to_owned())].into());
        cm
    }

    /// Feeds events (namespace index, event) through the merge into a reflector; returns the
    /// store's contents as sorted "ns/name=v" and whether it became ready.
    async fn run(events: Vec<(usize, Event<ConfigMap>)>) -> (Vec<String>, bool) {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        // The merger is driven directly, so the order across namespaces is the test's.
        let mut merger = Merger::new(vec!["a".into(), "b".into()], store.clone());
        for (i, event) in events {
            merger.on_event(i, event);
            while let Some(out) = merger.out.pop_front() {
                if let Ok(e) = out {
                    writer.apply_watcher_event(&e);
                }
            }
        }
        let mut state: Vec<String> = store
            .state()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}={}",
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.data
                        .as_ref()
                        .and_then(|d| d.get("v"))
                        .cloned()
                        .unwrap_or_default()
                )
            })
            .collect();
        state.sort();
        let ready = store.wait_until_ready().now_or_never().is_some();
        (state, ready)
    }

    #[tokio::test]
    async fn one_store_for_many_namespaces() {
        use Event::*;
        // Nothing is ready (or visible) until both namespaces have listed; updates made to a
        // listed namespace meanwhile are kept.
        let (state, ready) = run(vec![
            (0, Init),
            (0, InitApply(cm("a", "x", "1"))),
            (0, InitDone),
            (0, Apply(cm("a", "x", "2"))),
            (0, Apply(cm("a", "gone", "1"))),
            (0, Delete(cm("a", "gone", "1"))),
            (1, Init),
        ])
        .await;
        assert!(!ready);
        assert!(state.is_empty());

        let (state, ready) = run(vec![
            (0, Init),
            (0, InitApply(cm("a", "x", "1"))),
            (0, InitDone),
            (0, Apply(cm("a", "x", "2"))),
            (1, Init),
            (1, InitApply(cm("b", "y", "1"))),
            (1, InitDone),
            // Live: b re-lists (after a watch desync) without y, with z; a is untouched.
            (0, Apply(cm("a", "w", "1"))),
            (1, Init),
            (1, InitApply(cm("b", "z", "1"))),
            (1, InitDone),
            (0, Delete(cm("a", "w", "1"))),
        ])
        .await;
        assert!(ready);
        assert_eq!(state, ["a/x=2", "b/z=1"]);
    }

    #[tokio::test]
    async fn a_single_watch_passes_through_and_errors_pass_on() {
        let (store, _) = reflector::store::<ConfigMap>();
        let events: Vec<watcher::Result<Event<ConfigMap>>> = vec![
            Ok(Event::Init),
            Err(Error::NoResourceVersion),
            Ok(Event::InitDone),
        ];
        let merged = merge(
            vec![("a".into(), stream::iter(events).boxed())],
            store.clone(),
        );
        assert_eq!(merged.count().await, 3);

        let events = |ns: &str| -> BoxStream<'static, watcher::Result<Event<ConfigMap>>> {
            stream::iter(vec![
                Ok(Event::Init),
                Ok(Event::InitApply(cm(ns, "x", "1"))),
                Err(Error::NoResourceVersion),
                Ok(Event::InitDone),
            ])
            .boxed()
        };
        let merged: Vec<_> = merge(
            vec![("a".into(), events("a")), ("b".into(), events("b"))],
            store,
        )
        .collect()
        .await;
        let errors = merged.iter().filter(|e| e.is_err()).count();
        let applies = merged
            .iter()
            .filter(|e| matches!(e, Ok(Event::InitApply(_))))
            .count();
        assert_eq!((errors, applies, merged.len()), (2, 2, 6));
    }
}
