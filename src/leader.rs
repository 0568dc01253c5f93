//! Leader election on a `coordination.k8s.io/v1` Lease, so that replicas never refresh the
//! same tokens or write the same status at once.
//!
//! Only the holder of the Lease runs the controller. The rules follow client-go's
//! leaderelection, written against kube's Lease API (the `kube-lease-manager` crate was
//! considered: its standby sleeps until the old lease expires, so a released lease is not
//! taken over at once, and a leader that cannot renew keeps acting):
//!
//! - Every write is a `replace` guarded by the Lease's resourceVersion, so two candidates can
//!   never both win.
//! - A standby takes over when the holder field is empty (a graceful release), or when it has
//!   seen the same holder record, unchanged, for the holder's lease duration by its *own*
//!   clock; other nodes' clocks never matter. It watches the Lease, so a release or a renewal
//!   is seen at once.
//! - The leader renews every renew interval and steps down (drops the controller at once) when
//!   it has not renewed for `lease duration - renew interval`, before any standby may take
//!   over.
//! - On shutdown the leader stops the controller (letting running reconciles finish, within
//!   a drain timeout, while still renewing), then clears the holder so a standby takes over
//!   without waiting for expiry.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::telemetry::Health;

/// The default Lease name.
pub const DEFAULT_LEASE_NAME: &str = "sforg-operator-leader";

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (unique among replicas: the pod name).
    pub identity: String,
    /// How long a leader's claim lasts without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How long a stopping leader lets running reconciles finish before it drops them.
    pub drain_timeout: Duration,
}

impl LeaseConfig {
    /// A configuration with the defaults: 15 s lease, renewed every 5 s, 10 s drain.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// After this long without a successful renewal the leader steps down.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration - self.renew_interval
    }

    /// How often a standby looks at the Lease when no watch event woke it.
    fn retry_period(&self) -> Duration {
        (self.renew_interval / 2).max(Duration::from_millis(100))
    }
}

/// Why leader election cannot run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Timings that would let two leaders overlap.
    #[error(
        "the lease duration ({duration:?}) must be at least twice the renew interval ({renew:?}) and \
         at least 1s; for example --lease-duration 15s --lease-renew-interval 5s"
    )]
    Timing {
        /// The lease duration.
        duration: Duration,
        /// The renew interval.
        renew: Duration,
    },
    /// An empty name, namespace or identity.
    #[error("the leader lease needs a non-empty {0}; set it with --lease-name / --lease-namespace")]
    Missing(&'static str),
    /// Whatever ran under the lease returned on its own, which the controller never does.
    #[error(
        "the controller stopped on its own while leading; the process exits so that Kubernetes \
         restarts it (see the log lines before this one)"
    )]
    WorkEnded,
}

/// Resolves when the work running under the lease must stop (shutdown, or leadership lost).
#[derive(Debug)]
pub struct Stop(oneshot::Receiver<()>);

impl Future for Stop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// What a look at the Lease found.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// We hold it (just acquired or renewed).
    Held,
    /// Someone else holds it; look again within this long.
    Busy { holder: String, again_in: Duration },
}

/// A holder record as last seen, and when (by our clock).
#[derive(Debug)]
struct Seen {
    holder: String,
    renew_time: Option<MicroTime>,
    duration: Duration,
    at: Instant,
}

/// One replica's candidacy.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    metrics: Option<Arc<Metrics>>,
    health: Option<Health>,
    seen: Option<Seen>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Elector {
    /// A candidate for the Lease described by `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        if config.lease_duration < Duration::from_secs(1)
            || config.lease_duration < config.renew_interval * 2
            || config.renew_interval.is_zero()
        {
            return Err(LeaderError::Timing {
                duration: config.lease_duration,
                renew: config.renew_interval,
            });
        }
        for (value, what) in [
            (&config.name, "lease name"),
            (&config.namespace, "lease namespace"),
            (&config.identity, "identity"),
        ] {
            if value.is_empty() {
                return Err(LeaderError::Missing(what));
            }
        }
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            metrics: None,
            health: None,
            seen: None,
        })
    }

    /// Reports leadership in `sforg_leader`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reports standby readiness (see [`Health`]).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    fn set_leading(&self, leading: bool) {
        if let Some(m) = &self.metrics {
            m.set_leader(leading);
        }
        if let Some(h) = &self.health
            && leading
        {
            h.set_standby_ready(false);
        }
    }

    fn set_standby_ready(&self, ready: bool) {
        if let Some(h) = &self.health {
            h.set_standby_ready(ready);
        }
    }

    /// Runs `work` whenever this replica leads, until `shutdown` resolves. `work` gets a
    /// [`Stop`] that resolves when it must stop; it is dropped outright when leadership is
    /// lost or the drain timeout passes. Returns after releasing the Lease.
    pub async fn run<W, Fut>(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut work: W,
    ) -> Result<(), LeaderError>
    where
        W: FnMut(Stop) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut shutdown = pin!(shutdown);
        loop {
            self.set_leading(false);
            if !self.acquire(shutdown.as_mut()).await {
                return Ok(());
            }
            let took_at = Instant::now();
            info!(lease = %self.config.name, namespace = %self.config.namespace, identity = %self.config.identity, "became the leader");
            self.set_leading(true);
            let (stop_tx, stop_rx) = oneshot::channel();
            let mut task = pin!(work(Stop(stop_rx)));
            let mut renewed_at = took_at;

            let ended = tokio::select! {
                () = shutdown.as_mut() => None,
                lost = self.keep(&mut renewed_at) => Some(Err(lost)),
                () = task.as_mut() => Some(Ok(())),
            };
            match ended {
                Some(Err(why)) => {
                    // Someone else may lead soon: drop the controller now.
                    warn!(lease = %self.config.name, reason = %why, "lost the leader lease; stopping the controller");
                    drop(stop_tx);
                    continue;
                }
                Some(Ok(())) => {
                    self.set_leading(false);
                    self.release().await;
                    return Err(LeaderError::WorkEnded);
                }
                None => {
                    info!("shutting down: stopping the controller, then releasing the lease");
                    let _ = stop_tx.send(());
                    let drain_until = Instant::now() + self.config.drain_timeout;
                    tokio::select! {
                        () = task.as_mut() => {}
                        lost = self.keep(&mut renewed_at) => {
                            warn!(reason = %lost, "lost the leader lease while stopping");
                        }
                        () = sleep_until(drain_until) => {
                            warn!(timeout = ?self.config.drain_timeout, "reconciles still running at the drain timeout; dropping them");
                        }
                    }
                    self.set_leading(false);
                    self.release().await;
                    return Ok(());
                }
            }
        }
    }

    /// Waits until this replica holds the Lease (`true`) or `shutdown` resolves (`false`).
    async fn acquire(&mut self, mut shutdown: Pin<&mut impl Future<Output = ()>>) -> bool {
        let selector = format!("metadata.name={}", self.config.name);
        let mut changes = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .boxed();
        let mut announced: Option<String> = None;
        loop {
            let call = self.config.renew_interval;
            let again_in = match timeout(call, self.look()).await {
                Ok(Ok(Look::Held)) => return true,
                Ok(Ok(Look::Busy { holder, again_in })) => {
                    self.set_standby_ready(true);
                    if announced.as_deref() != Some(holder.as_str()) {
                        info!(lease = %self.config.name, %holder, "standing by; another replica leads");
                        announced = Some(holder);
                    }
                    again_in.min(self.config.retry_period())
                }
                Ok(Err(e)) => {
                    self.set_standby_ready(false);
                    warn!(lease = %self.config.name, namespace = %self.config.namespace, error = %e, "cannot read or write the leader lease (check the lease namespace and the RBAC for leases)");
                    self.config.retry_period()
                }
                Err(_) => {
                    self.set_standby_ready(false);
                    warn!(lease = %self.config.name, "the API server did not answer about the leader lease in time");
                    self.config.retry_period()
                }
            };
            tokio::select! {
                () = shutdown.as_mut() => return false,
                () = sleep(again_in) => {}
                event = changes.next() => {
                    if event.is_none() {
                        changes = stream::pending().boxed();
                    }
                }
            }
        }
    }

    /// Renews until it fails for too long or someone else holds the Lease; returns why.
    async fn keep(&mut self, renewed_at: &mut Instant) -> String {
        let deadline = self.config.renew_deadline();
        let mut next = *renewed_at + self.config.renew_interval;
        loop {
            sleep_until(next).await;
            let started = Instant::now();
            let left = (*renewed_at + deadline).saturating_duration_since(started);
            match timeout(left.max(Duration::from_millis(100)), self.look()).await {
                Ok(Ok(Look::Held)) => {
                    *renewed_at = started;
                    next = started + self.config.renew_interval;
                    continue;
                }
                Ok(Ok(Look::Busy { holder, .. })) => {
                    return format!("the lease is now held by {holder}");
                }
                Ok(Err(e)) => warn!(error = %e, "could not renew the leader lease"),
                Err(_) => warn!("renewing the leader lease timed out"),
            }
            if Instant::now() >= *renewed_at + deadline {
                return format!("not renewed for {deadline:?}");
            }
            next = Instant::now() + self.config.retry_period().min(Duration::from_secs(1));
        }
    }

    fn claim(&self, spec: &mut LeaseSpec, new_holder: bool) {
        let now = MicroTime(Timestamp::now());
        if new_holder {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.config.lease_duration.as_secs().max(1) as i32);
    }

    /// Reads the Lease and acquires, renews or takes it over when the rules allow.
    async fn look(&mut self) -> Result<Look, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let mut spec = LeaseSpec::default();
            self.claim(&mut spec, true);
            spec.lease_transitions = Some(0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.held()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.busy_soon()),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let take = match &holder {
            Some(h) if *h == self.config.identity => false,
            None => true,
            Some(h) => {
                let duration = spec
                    .lease_duration_seconds
                    .map_or(self.config.lease_duration, |s| {
                        Duration::from_secs(s.max(0) as u64)
                    });
                let unchanged = self
                    .seen
                    .as_ref()
                    .is_some_and(|s| s.holder == *h && s.renew_time == spec.renew_time);
                if !unchanged {
                    self.seen = Some(Seen {
                        holder: h.clone(),
                        renew_time: spec.renew_time.clone(),
                        duration,
                        at: Instant::now(),
                    });
                }
                let seen = self
                    .seen
                    .as_ref()
                    .map_or(Duration::ZERO, |s| s.at.elapsed());
                let duration = self.seen.as_ref().map_or(duration, |s| s.duration);
                if seen < duration {
                    return Ok(Look::Busy {
                        holder: h.clone(),
                        again_in: duration - seen,
                    });
                }
                info!(lease = %self.config.name, previous = %h, "the leader stopped renewing; taking over");
                true
            }
        };
        self.claim(&mut spec, take);
        lease.spec = Some(spec);
        lease.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(self.held()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.busy_soon()),
            Err(e) => Err(e),
        }
    }

    fn held(&mut self) -> Look {
        self.seen = None;
        Look::Held
    }

    /// Lost a race for the Lease: look again shortly.
    fn busy_soon(&self) -> Look {
        Look::Busy {
            holder: "another replica".into(),
            again_in: Duration::from_millis(200),
        }
    }

    /// Clears the holder when it is us, so a standby takes over at once. Failures are logged:
    /// the Lease then simply expires.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(false);
            };
            let mut spec = lease.spec.take().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
            lease.spec = Some(spec);
            lease.metadata.managed_fields = None;
            self.api
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match timeout(self.config.renew_interval, result).await {
            Ok(Ok(true)) => info!(lease = %self.config.name, "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "could not release the leader lease; it expires on its own")
            }
            Err(_) => warn!("releasing the leader lease timed out; it expires on its own"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_could_overlap_are_refused() {
        let mut config = LeaseConfig::new("l", "ns", "me");
        assert_eq!(config.renew_deadline(), Duration::from_secs(10));
        config.renew_interval = Duration::from_secs(10);
        let client = || {
            // Never used: construction fails before any request.
            let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
            Client::try_from(config).unwrap()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let err = Elector::new(client(), config.clone()).unwrap_err();
            assert!(err.to_string().contains("--lease-renew-interval"), "{err}");
            config.renew_interval = Duration::from_secs(5);
            config.name.clear();
            let err = Elector::new(client(), config).unwrap_err();
            assert!(err.to_string().contains("--lease-name"), "{err}");
        });
    }
}
