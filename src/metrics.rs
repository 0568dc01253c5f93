//! Prometheus metrics: what the operator does (reconciles, Salesforce requests, leadership)
//! and what the orgs are (state, holds, how long a person has been awaited).
//!
//! Event-like numbers (counters, histograms) are recorded where they happen: the controller
//! wraps each reconcile, and [`Instrumented`] wraps the [`Salesforce`] client so the HTTP
//! client itself stays free of metrics. Per-org numbers are not kept in metric families at
//! all: [`OrgCollector`] reads them from the controller's reflector cache at scrape time.
//! That costs nothing between scrapes at 10k orgs, and a deleted org's series disappear with
//! it, with no bookkeeping to forget. A replica that does not lead has no cache, so only the
//! leader reports per-org series (sum across replicas without double counting).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::conditions;
use crate::crd::{SalesforceOrg, TokenState};
use crate::reconcile::context::OrgKey;
use crate::salesforce::{AppCredentials, Identity, Salesforce, SfError, TokenResponse};
use crate::secret::SecretString;

/// Content type of the text exposition (OpenMetrics, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every metric of the process, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels1, Counter>,
    reconcile_errors: Family<Labels1, Counter>,
    reconcile_duration: Histogram,
    salesforce_requests: Family<Labels2, Counter>,
    salesforce_duration: Family<Labels1, Histogram>,
    leader: Gauge,
    notifications: Family<Vec<(&'static str, String)>, Counter>,
    notification_config_valid: Gauge,
    orgs: Arc<RwLock<Option<OrgSource>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels1, Counter>::default();
        registry.register(
            "sforg_reconcile",
            "Reconciles of SalesforceOrgs, by result (success or error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<Labels1, Counter>::default();
        registry.register(
            "sforg_reconcile_errors",
            "Failed reconciles, by reason (kube, metadata, finalizer)",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "sforg_reconcile_duration_seconds",
            "Time one reconcile took, Salesforce calls included",
            reconcile_duration.clone(),
        );
        let salesforce_requests = Family::<Labels2, Counter>::default();
        registry.register(
            "sforg_salesforce_requests",
            "Salesforce requests, by endpoint (userinfo, refresh, jwt_bearer, client_credentials, \
             authorization_code, revoke) and outcome (ok, access_token_invalid, \
             authorization_lost, transient, host_not_allowed, bad_private_key)",
            salesforce_requests.clone(),
        );
        let salesforce_duration = Family::<Labels1, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.025, 2.0, 11))
        });
        registry.register(
            "sforg_salesforce_request_duration_seconds",
            "Time one Salesforce request took, by endpoint",
            salesforce_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "sforg_leader",
            "1 while this replica holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let notifications = Family::<Vec<(&'static str, String)>, Counter>::default();
        registry.register(
            "sforg_notifications",
            "Notification delivery attempts, by channel and outcome (sent, retried, failed)",
            notifications.clone(),
        );
        let notification_config_valid = Gauge::default();
        registry.register(
            "sforg_notification_config_valid",
            "1 while the last version of the notification channels Secret parsed (0: the last \
             good channels stay in force; the log says which field is wrong)",
            notification_config_valid.clone(),
        );
        let orgs = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(OrgCollector {
            source: orgs.clone(),
        }));
        Arc::new(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            salesforce_requests,
            salesforce_duration,
            leader,
            notifications,
            notification_config_valid,
            orgs,
        })
    }

    /// Records one reconcile: its duration and, for a failure, the error's stable label.
    pub fn reconciled(&self, elapsed: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles.get_or_create(&[("result", result)]).inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&[("reason", reason)])
                .inc();
        }
    }

    /// Records one Salesforce request.
    pub fn salesforce_request(
        &self,
        endpoint: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.salesforce_requests
            .get_or_create(&[("endpoint", endpoint), ("outcome", outcome)])
            .inc();
        self.salesforce_duration
            .get_or_create(&[("endpoint", endpoint)])
            .observe(took.as_secs_f64());
    }

    /// Counts one notification delivery attempt on `channel`.
    pub fn notification(&self, channel: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&vec![
                ("channel", channel.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Sets whether the notification channels Secret parsed.
    pub fn set_notification_config_valid(&self, valid: bool) {
        self.notification_config_valid.set(i64::from(valid));
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Reports per-org series from `source` until the returned guard is dropped (when the
    /// controller stops, for example after losing the lease).
    pub fn watch_orgs(self: &Arc<Self>, source: OrgSource) -> OrgsAttached {
        if let Ok(mut slot) = self.orgs.write() {
            *slot = Some(source);
        }
        OrgsAttached {
            slot: self.orgs.clone(),
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Where per-org series come from: the controller's cache of SalesforceOrgs and its memory
/// of when it last checked each one.
pub struct OrgSource {
    /// The reflector store of SalesforceOrgs.
    pub store: Store<SalesforceOrg>,
    /// The time of the last Salesforce check per org uid, made by this process.
    pub last_checks: Box<dyn Fn() -> HashMap<OrgKey, Timestamp> + Send + Sync>,
}

/// Keeps per-org series reported; dropping it removes them.
#[must_use = "per-org series disappear when this is dropped"]
pub struct OrgsAttached {
    slot: Arc<RwLock<Option<OrgSource>>>,
}

impl Drop for OrgsAttached {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = None;
        }
    }
}

/// One org's per-org numbers, as rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct OrgSample {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Seconds since the org stopped being usable, while it waits for a person (Expired or
    /// Pending).
    pub waiting_for_person_seconds: Option<f64>,
    /// CronJobs it holds suspended.
    pub cronjobs_held: usize,
    /// `status.lastRefreshedAt`, in seconds since the epoch.
    pub last_refresh: Option<f64>,
    /// The last check, in seconds since the epoch.
    pub last_check: Option<f64>,
}

/// Orgs by state and per-org samples. Orgs without status count as Pending, the state's
/// default.
pub fn org_samples(
    orgs: &[Arc<SalesforceOrg>],
    last_checks: &HashMap<OrgKey, Timestamp>,
    now: Timestamp,
) -> ([(TokenState, u64); 4], Vec<OrgSample>) {
    let mut by_state = [
        (TokenState::Pending, 0),
        (TokenState::Valid, 0),
        (TokenState::Expired, 0),
        (TokenState::Unknown, 0),
    ];
    let secs = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    let mut samples = Vec::with_capacity(orgs.len());
    for org in orgs {
        let status = org.status.as_ref();
        let state = status.and_then(|s| s.state).unwrap_or_default();
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == state) {
            slot.1 += 1;
        }
        let waiting = matches!(state, TokenState::Expired | TokenState::Pending).then(|| {
            // TokenValid turned non-True when the org stopped being usable.
            let since = status
                .and_then(|s| conditions::get(&s.conditions, conditions::TOKEN_VALID))
                .filter(|c| c.status != "True")
                .map(|c| c.last_transition_time.0)
                .or_else(|| org.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(now);
            ((now.as_millisecond() - since.as_millisecond()) as f64 / 1000.0).max(0.0)
        });
        let checked_here = org
            .uid()
            .and_then(|uid| last_checks.get(&OrgKey::of(&uid)).copied());
        let last_check = checked_here
            .or_else(|| status.and_then(|s| s.last_checked_at.as_ref()).map(|t| t.0))
            .map(secs);
        samples.push(OrgSample {
            namespace: org.namespace().unwrap_or_default(),
            name: org.name_any(),
            waiting_for_person_seconds: waiting,
            cronjobs_held: status.map_or(0, |s| s.suspended_cron_jobs.len()),
            last_refresh: status
                .and_then(|s| s.last_refreshed_at.as_ref())
                .map(|t| secs(t.0)),
            last_check,
        });
    }
    (by_state, samples)
}

/// Renders org series from the attached source at each scrape.
struct OrgCollector {
    source: Arc<RwLock<Option<OrgSource>>>,
}

impl fmt::Debug for OrgCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgCollector").finish_non_exhaustive()
    }
}

fn state_label(state: TokenState) -> &'static str {
    match state {
        TokenState::Pending => "Pending",
        TokenState::Valid => "Valid",
        TokenState::Expired => "Expired",
        TokenState::Unknown => "Unknown",
    }
}

/// Writes one gauge family with `(namespace, org)` labels.
fn encode_per_org(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[OrgSample],
    value: impl Fn(&OrgSample) -> Option<f64>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for sample in samples {
        let Some(v) = value(sample) else { continue };
        let labels = [
            ("namespace", sample.namespace.as_str()),
            ("org", sample.name.as_str()),
        ];
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for OrgCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Ok(slot) = self.source.read() else {
            return Ok(());
        };
        let Some(source) = slot.as_ref() else {
            return Ok(());
        };
        let orgs = source.store.state();
        let last_checks = (source.last_checks)();
        drop(slot);
        let (by_state, samples) = org_samples(&orgs, &last_checks, Timestamp::now());

        let mut family = encoder.encode_descriptor(
            "sforg_orgs",
            "SalesforceOrgs by status.state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in by_state {
            let labels = [("state", state_label(state))];
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }
        encode_per_org(
            &mut encoder,
            "sforg_org_waiting_for_person_seconds",
            "Seconds since the org became Expired or Pending, while a person has to log in",
            &samples,
            |s| s.waiting_for_person_seconds,
        )?;
        encode_per_org(
            &mut encoder,
            "sforg_cronjobs_held",
            "CronJobs the org holds suspended (orgs holding none are left out)",
            &samples,
            |s| (s.cronjobs_held > 0).then_some(s.cronjobs_held as f64),
        )?;
        encode_per_org(
            &mut encoder,
            "sforg_token_last_refresh_timestamp_seconds",
            "When the org's access token was last renewed (unix seconds)",
            &samples,
            |s| s.last_refresh,
        )?;
        encode_per_org(
            &mut encoder,
            "sforg_org_last_check_timestamp_seconds",
            "When the org's token was last checked against Salesforce (unix seconds)",
            &samples,
            |s| s.last_check,
        )?;
        Ok(())
    }
}

/// A [`Salesforce`] client that counts and times every request by endpoint and outcome.
#[derive(Clone, Debug)]
pub struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Instrumented<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// The `outcome` label of a result.
pub fn outcome<T>(result: &Result<T, SfError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(SfError::AccessTokenInvalid) => "access_token_invalid",
        Err(SfError::AuthorizationLost { .. }) => "authorization_lost",
        Err(SfError::Transient { .. }) => "transient",
        Err(SfError::HostNotAllowed(_)) => "host_not_allowed",
        Err(SfError::BadPrivateKey(_)) => "bad_private_key",
        Err(SfError::NotMyDomain { .. }) => "not_my_domain",
    }
}

impl<S: Salesforce> Instrumented<S> {
    async fn timed<T>(
        &self,
        endpoint: &'static str,
        call: impl Future<Output = Result<T, SfError>>,
    ) -> Result<T, SfError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .salesforce_request(endpoint, outcome(&result), started.elapsed());
        result
    }
}

impl<S: Salesforce> Salesforce for Instrumented<S> {
    async fn userinfo(
        &self,
        instance_url: &str,
        access_token: &SecretString,
    ) -> Result<Identity, SfError> {
        self.timed("userinfo", self.inner.userinfo(instance_url, access_token))
            .await
    }

    async fn refresh(
        &self,
        login_url: &str,
        app: &AppCredentials,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        self.timed("refresh", self.inner.refresh(login_url, app, refresh_token))
            .await
    }

    async fn jwt_bearer(
        &self,
        login_url: &str,
        client_id: &str,
        username: &str,
        private_key_pem: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        self.timed(
            "jwt_bearer",
            self.inner
                .jwt_bearer(login_url, client_id, username, private_key_pem),
        )
        .await
    }

    async fn client_credentials(
        &self,
        login_url: &str,
        app: &AppCredentials,
    ) -> Result<TokenResponse, SfError> {
        self.timed(
            "client_credentials",
            self.inner.client_credentials(login_url, app),
        )
        .await
    }

    async fn exchange_code(
        &self,
        login_url: &str,
        app: &AppCredentials,
        code: &SecretString,
        pkce_verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenResponse, SfError> {
        self.timed(
            "authorization_code",
            self.inner
                .exchange_code(login_url, app, code, pkce_verifier, redirect_uri),
        )
        .await
    }

    async fn revoke(&self, login_url: &str, token: &SecretString) -> Result<(), SfError> {
        self.timed("revoke", self.inner.revoke(login_url, token))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Condition;
    use crate::crd::SalesforceOrgStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn org(name: &str, uid: &str, status: Option<SalesforceOrgStatus>) -> Arc<SalesforceOrg> {
        let mut org: SalesforceOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": name, "namespace": "backups", "uid": uid,
                "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"webServer": {"clientId": "x"}}, "tokenSecretRef": {"name": "t"}}
        }))
        .unwrap();
        org.status = status;
        Arc::new(org)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn token_valid(status: &str, since: &str) -> Condition {
        Condition {
            type_: conditions::TOKEN_VALID.into(),
            status: status.to_owned().into(),
            reason: "r".into(),
            message: "m".into(),
            last_transition_time: Time(at(since)),
            observed_generation: None,
        }
    }

    #[test]
    fn samples_follow_status() {
        let now = at("2027-01-15T10:00:00Z");
        let expired = SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            conditions: vec![token_valid("False", "2027-01-15T09:00:00Z")],
            suspended_cron_jobs: vec!["nightly".into(), "weekly".into()],
            last_refreshed_at: Some(Time(at("2027-01-15T08:30:00Z"))),
            ..Default::default()
        };
        let valid = SalesforceOrgStatus {
            state: Some(TokenState::Valid),
            conditions: vec![token_valid("True", "2027-01-15T09:00:00Z")],
            last_checked_at: Some(Time(at("2027-01-15T09:50:00Z"))),
            ..Default::default()
        };
        let orgs = vec![
            org("a", "u-a", Some(expired)),
            org("b", "u-b", Some(valid)),
            org("c", "u-c", None),
        ];
        let checks = HashMap::from([(OrgKey::of("u-b"), at("2027-01-15T09:59:00Z"))]);
        let (by_state, samples) = org_samples(&orgs, &checks, now);
        assert_eq!(
            by_state.map(|(_, n)| n),
            [1, 1, 1, 0],
            "Pending, Valid, Expired, Unknown"
        );
        assert_eq!(samples[0].waiting_for_person_seconds, Some(3600.0));
        assert_eq!(samples[0].cronjobs_held, 2);
        assert_eq!(
            samples[0].last_refresh,
            Some(at("2027-01-15T08:30:00Z").as_second() as f64)
        );
        assert_eq!(samples[1].waiting_for_person_seconds, None);
        assert_eq!(
            samples[1].last_check,
            Some(at("2027-01-15T09:59:00Z").as_second() as f64),
            "this process's own check wins over status"
        );
        // No status yet: waiting since creation.
        assert_eq!(samples[2].waiting_for_person_seconds, Some(7200.0));
    }

    #[test]
    fn exposition_has_names_the_chart_expects() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(20), None);
        metrics.reconciled(Duration::from_millis(20), Some("kube"));
        metrics.salesforce_request("userinfo", "ok", Duration::from_millis(30));
        metrics.set_leader(true);
        let text = metrics.encode().unwrap();
        for want in [
            "sforg_reconcile_total{result=\"success\"} 1",
            "sforg_reconcile_errors_total{reason=\"kube\"} 1",
            "sforg_reconcile_duration_seconds_count 2",
            "sforg_salesforce_requests_total{endpoint=\"userinfo\",outcome=\"ok\"} 1",
            "sforg_leader 1",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(
            !text.contains("sforg_orgs"),
            "no org series without a cache"
        );
    }
}
