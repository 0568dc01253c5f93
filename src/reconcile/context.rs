//! What reconciles share: settings, the clients, and what the process remembers between
//! reconciles (the last check of each org, tokens the Secret refused, re-assertion backoff).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::OnceCell;

use super::decide::Memo;
pub use super::exchange::HeldTokens;
use crate::callback::Links;
use crate::clock::Clock;
use crate::dependents;
use crate::events::Recorder;
use crate::salesforce::allowlist::HostAllowlist;

/// The default expiry lead times: 7 and 2 days.
pub const DEFAULT_EXPIRY_LEAD_TIMES: [Duration; 2] = [
    Duration::from_secs(7 * 86_400),
    Duration::from_secs(2 * 86_400),
];

/// Operator-wide settings for reconciling.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Refresh a web server org's token at least this often, even when the access token still
    /// works, so that an "expire if unused" policy never kills the refresh token.
    pub keepalive: Duration,
    /// How long before an authorization's forecast expiry TokenExpiringSoon turns True, then
    /// moves to the next stage: longest first (7d, 2d by default).
    pub expiry_lead_times: Vec<Duration>,
    /// Hosts that may receive credentials.
    pub allowlist: HostAllowlist,
    /// Re-auth links for status, when the operator has a public URL for its callback server.
    pub reauth: Option<Links>,
    /// The clock decisions are made with (the system clock; shifted only to rehearse skew).
    pub clock: Clock,
    /// Renewed tokens the token Secret refused. Clones share them, so they outlive a
    /// controller: a leader that steps down during an API server outage and leads again
    /// still writes them before it talks to Salesforce.
    pub held: HeldTokens,
    /// Notifications, when the administrator configured channels.
    pub notify: Option<crate::notify::Notifier>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(24 * 3600),
            expiry_lead_times: DEFAULT_EXPIRY_LEAD_TIMES.to_vec(),
            allowlist: HostAllowlist::default(),
            reauth: None,
            clock: Clock::system(),
            held: HeldTokens::default(),
            notify: None,
        }
    }
}

/// Which orgs held CronJobs when this controller started, per namespace, read once on first
/// need. A process killed between suspending an org's CronJobs and writing its status leaves
/// holds the status does not record; such an org is checked at once after a restart, as
/// before, instead of waiting for its slot.
#[derive(Default)]
pub struct HoldsAtStart {
    namespaces: Mutex<HashMap<String, Arc<OnceCell<BTreeSet<String>>>>>,
}

impl HoldsAtStart {
    /// Whether `org` held a CronJob of `ns` at start; `read` lists the holders of `ns` the
    /// first time `ns` is asked for.
    pub async fn held_by<F, Fut, E>(&self, ns: &str, org: &str, read: F) -> Result<bool, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BTreeSet<String>, E>>,
    {
        let cell = match self.namespaces.lock() {
            Ok(mut namespaces) => namespaces.entry(ns.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        Ok(cell.get_or_try_init(read).await?.contains(org))
    }
}

/// An org's uid as a map key of 16 bytes, not a 36-character string: the memo map has an
/// entry per org. A uid is a UUID, so the key is the UUID's own 128 bits; anything else (never
/// seen from an API server) is hashed into them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrgKey(u128);

impl OrgKey {
    /// The key of the org with this uid.
    pub fn of(uid: &str) -> Self {
        // Read in place, without a copy: this runs in every reconcile and for every org on
        // every metrics scrape.
        let canonical = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if canonical {
            let bits = uid
                .chars()
                .filter_map(|c| c.to_digit(16))
                .fold(0u128, |bits, digit| (bits << 4) | u128::from(digit));
            return Self(bits);
        }
        // Not a UUID: two hashes of it, marked apart from every UUID by a version nibble of 0
        // (every UUID an API server generates is version 4).
        use std::hash::{Hash, Hasher};
        let half = |salt: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, uid).hash(&mut h);
            u128::from(h.finish())
        };
        Self(((half(1) << 64) | half(2)) & !(0xf << 76))
    }
}

/// Shared state of the reconciler.
pub struct Context<S> {
    /// The Kubernetes client.
    pub client: Client,
    /// The Salesforce client.
    pub salesforce: S,
    /// Settings.
    pub settings: Settings,
    /// Event recorder.
    pub recorder: Recorder,
    /// The last check of each org, so status writes and watch echoes do not cause extra
    /// Salesforce calls. Boxed: the map keeps room for more entries than it holds, and a
    /// pointer is what each spare slot then costs.
    memos: Mutex<HashMap<OrgKey, Box<Memo>>>,
    /// Re-assertions of holds against other writers, for their backoff.
    pub dependents: dependents::Tracker,
    /// Holds found on CronJobs when this controller started.
    pub holds_at_start: HoldsAtStart,
    /// The orgs that hold CronJobs or must, for the CronJob watch.
    pub holding: Arc<dependents::Holding>,
}

impl<S> Context<S> {
    /// A context for the controller.
    pub fn new(client: Client, salesforce: S, settings: Settings, recorder: Recorder) -> Self {
        Self {
            client,
            salesforce,
            settings,
            recorder,
            memos: Mutex::default(),
            dependents: dependents::Tracker::default(),
            holds_at_start: HoldsAtStart::default(),
            holding: Arc::default(),
        }
    }

    /// The last check of an org.
    pub fn memo(&self, uid: &str) -> Option<Memo> {
        self.memos
            .lock()
            .ok()?
            .get(&OrgKey::of(uid))
            .map(|memo| (**memo).clone())
    }

    /// Remembers a check.
    pub fn remember(&self, uid: &str, memo: Memo) {
        if let Ok(mut memos) = self.memos.lock() {
            memos.insert(OrgKey::of(uid), Box::new(memo));
        }
    }

    /// Forgets a deleted org.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut memos) = self.memos.lock() {
            memos.remove(&OrgKey::of(uid));
        }
        self.settings.held.release(uid);
    }

    /// Forgets the checks of orgs not in `live` (uids): orgs deleted while a watch was down,
    /// whose deletion no event reported.
    pub fn forget_all_but<'a>(&self, live: impl IntoIterator<Item = &'a str>) {
        let live: std::collections::HashSet<OrgKey> = live.into_iter().map(OrgKey::of).collect();
        if let Ok(mut memos) = self.memos.lock() {
            memos.retain(|key, _| live.contains(key));
        }
    }

    /// When this process last checked each org against Salesforce (for metrics).
    pub fn last_checks(&self) -> HashMap<OrgKey, Timestamp> {
        self.memos
            .lock()
            .map(|memos| {
                memos
                    .iter()
                    // A memo without a verdict stands for a check made before a restart.
                    .filter(|(_, m)| m.verdict.is_some())
                    .map(|(key, m)| (*key, m.at))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::OrgKey;

    #[test]
    fn org_keys_are_a_uuids_bits_and_tell_uids_apart() {
        let uuid = "0a1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d";
        assert_eq!(
            OrgKey::of(uuid),
            OrgKey(0x0a1b_2c3d_4e5f_4a7b_8c9d_0e1f_2a3b_4c5d)
        );
        assert_ne!(
            OrgKey::of(uuid),
            OrgKey::of("0a1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5e")
        );
        // Not a UUID: hashed, the same each time, never a version-4 UUID's bits.
        assert_eq!(OrgKey::of("uid-1"), OrgKey::of("uid-1"));
        assert_ne!(OrgKey::of("uid-1"), OrgKey::of("uid-2"));
        assert_eq!((OrgKey::of("uid-1").0 >> 76) & 0xf, 0);
        assert_eq!(
            (OrgKey::of("+a1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d").0 >> 76) & 0xf,
            0
        );
    }
}
