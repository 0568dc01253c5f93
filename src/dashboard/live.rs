//! The dashboard's view of the cluster: one watch on SalesforceOrgs (in the namespace shown,
//! or all), kept in memory for first renders and turned into row updates for every open page.
//!
//! Each change is rendered once and broadcast; a page that fell behind (or connected after
//! changes it did not render) gets the whole table again instead. Watch errors (RBAC refusals
//! above all) are kept and shown on the page, with what to do.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, watch};

use super::view;
use crate::crd::SalesforceOrg;

/// Where the dashboard looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace the user may list.
    All,
}

impl Scope {
    /// Whether an org in `namespace` is shown.
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::Namespace(ns) => ns == namespace,
            Scope::All => true,
        }
    }

    /// The one namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::Namespace(ns) => Some(ns),
            Scope::All => None,
        }
    }
}

/// What open pages are told.
#[derive(Clone, Debug)]
pub enum Update {
    /// A row's new HTML.
    Row {
        /// `namespace/name`.
        key: String,
        /// The `<tr>`.
        html: String,
    },
    /// An org is gone.
    Remove {
        /// `namespace/name`.
        key: String,
    },
    /// The whole table changed (a relist): fetch it again.
    Reset,
    /// The watch failed (`Some`) or works again (`None`).
    Problem(Option<String>),
    /// The operator answered a check requested here.
    Checked {
        /// `namespace/name`.
        key: String,
        /// What it said.
        message: String,
        /// Whether it is a failure to show as one.
        failed: bool,
    },
}

/// An [`Update`] with its sequence number.
#[derive(Clone, Debug)]
pub struct Numbered {
    /// Increases with every change of the table.
    pub seq: u64,
    /// The change.
    pub update: Update,
}

type Key = (String, String);

#[derive(Default)]
struct Table {
    orgs: BTreeMap<Key, SalesforceOrg>,
    seq: u64,
    problem: Option<String>,
}

/// The shared state; cheap to clone.
#[derive(Clone)]
pub struct Live {
    table: Arc<RwLock<Table>>,
    tx: broadcast::Sender<Numbered>,
    ready: watch::Receiver<bool>,
    ready_tx: Arc<watch::Sender<bool>>,
}

/// A snapshot of the table for a render.
pub struct Snapshot {
    /// The orgs, by namespace and name.
    pub orgs: Vec<SalesforceOrg>,
    /// The table's sequence number.
    pub seq: u64,
    /// The watch's failure, if it is failing.
    pub problem: Option<String>,
}

fn key(org: &SalesforceOrg) -> Key {
    (org.namespace().unwrap_or_default(), org.name_any())
}

fn key_text(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

/// What to tell a person whose watch failed.
pub fn problem_text(error: &watcher::Error, scope: &Scope) -> String {
    let place = match scope {
        Scope::Namespace(ns) => format!("in namespace {ns}"),
        Scope::All => "in all namespaces".to_owned(),
    };
    let api = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(s) => Some(s.as_ref()),
            _ => None,
        },
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        _ => None,
    };
    match api {
        Some(s) if s.code == 403 => format!(
            "Your Kubernetes user may not list SalesforceOrgs {place}: {}. Ask for get, list \
             and watch on salesforceorgs.orgtokens.dev, or start the dashboard with -n and a \
             namespace you may read.",
            s.message
        ),
        Some(s) if s.code == 404 => "The SalesforceOrg CRD is not installed in this cluster; \
             install it with: sforg-operator crd | kubectl apply --server-side -f -"
            .to_owned(),
        _ => format!("Cannot watch SalesforceOrgs {place} (retrying): {error}"),
    }
}

impl Live {
    /// An empty table, not ready yet.
    pub fn new() -> Live {
        let (tx, _) = broadcast::channel(4096);
        let (ready_tx, ready) = watch::channel(false);
        Live {
            table: Arc::default(),
            tx,
            ready,
            ready_tx: Arc::new(ready_tx),
        }
    }

    /// Subscribes to updates; take the subscription before a snapshot so nothing is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.tx.subscribe()
    }

    /// Waits (up to `timeout`) for the first complete list, or a failure to report.
    pub async fn wait_ready(&self, timeout: std::time::Duration) {
        let mut ready = self.ready.clone();
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
    }

    /// The current table.
    pub fn snapshot(&self) -> Snapshot {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            orgs: table.orgs.values().cloned().collect(),
            seq: table.seq,
            problem: table.problem.clone(),
        }
    }

    /// The org `namespace/name` as last seen.
    pub fn get(&self, namespace: &str, name: &str) -> Option<SalesforceOrg> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .orgs
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn publish(&self, table: &mut Table, update: Update) {
        table.seq += 1;
        // No page open is fine.
        let _ = self.tx.send(Numbered {
            seq: table.seq,
            update,
        });
    }

    /// Tells every page what a requested check found.
    pub fn checked(&self, key: String, message: String, failed: bool) {
        let seq = self.table.read().map(|t| t.seq).unwrap_or_default();
        let _ = self.tx.send(Numbered {
            seq,
            update: Update::Checked {
                key,
                message,
                failed,
            },
        });
    }

    fn apply(&self, org: SalesforceOrg) {
        let html = view::row(&view::Row::of(&org, Timestamp::now())).into_string();
        let k = key(&org);
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.orgs.get(&k) == Some(&org) {
            return;
        }
        table.orgs.insert(k.clone(), org);
        let key = key_text(&k);
        self.publish(&mut table, Update::Row { key, html });
    }

    fn delete(&self, org: &SalesforceOrg) {
        let k = key(org);
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.orgs.remove(&k).is_some() {
            let key = key_text(&k);
            self.publish(&mut table, Update::Remove { key });
        }
    }

    fn replace_all(&self, orgs: BTreeMap<Key, SalesforceOrg>) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let problem = table.problem.take();
        table.orgs = orgs;
        self.publish(&mut table, Update::Reset);
        if problem.is_some() {
            self.publish(&mut table, Update::Problem(None));
        }
        drop(table);
        self.ready_tx.send_replace(true);
    }

    fn failed(&self, problem: String) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.problem.as_deref() != Some(problem.as_str()) {
            table.problem = Some(problem.clone());
            self.publish(&mut table, Update::Problem(Some(problem)));
        }
        drop(table);
        // A first render need not wait any longer: it shows the problem.
        self.ready_tx.send_replace(true);
    }

    /// Runs the watch until the process ends. Drops `managedFields`, which the page never
    /// shows, so 1,000 orgs cost little memory.
    pub async fn run(self, client: Client, scope: Scope) {
        let api: Api<SalesforceOrg> = match &scope {
            Scope::Namespace(ns) => Api::namespaced(client, ns),
            Scope::All => Api::all(client),
        };
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|org| org.managed_fields_mut().clear());
        let mut stream = std::pin::pin!(stream);
        let mut buffer: Option<BTreeMap<Key, SalesforceOrg>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => buffer = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(org)) => {
                    buffer
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key(&org), org);
                }
                Ok(watcher::Event::InitDone) => self.replace_all(buffer.take().unwrap_or_default()),
                Ok(watcher::Event::Apply(org)) => self.apply(org),
                Ok(watcher::Event::Delete(org)) => self.delete(&org),
                Err(e) => {
                    tracing::warn!(error = %e, "SalesforceOrg watch failed");
                    self.failed(problem_text(&e, &scope));
                }
            }
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}
