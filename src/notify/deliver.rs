//! The delivery worker: takes Pending records from the queue, delivers each on its channel
//! with bounded concurrency and retries, and marks it Sent or Failed with its own status
//! patch (under the org's resourceVersion, so it never overwrites a newer status). It runs
//! beside the controller, never inside a reconcile: a slow or failing channel delays nothing
//! else and never touches token state, CronJobs or the other channels.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::config::Channel;
use super::{DeliveryError, Job, Notifier, email, payload, webhook};
use crate::crd::{DeliveryState, NotificationRecord, SalesforceOrg};
use crate::events::Recorder;
use crate::metrics::Metrics;

/// The reason of the Warning Event when a notification could not be delivered.
pub const FAILED_EVENT: &str = "NotificationFailed";
/// The longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the worker uses.
pub struct Worker {
    /// The notifier whose queue it drains.
    pub notifier: Notifier,
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes the Warning Event of a failed delivery.
    pub recorder: Recorder,
    /// Counts deliveries.
    pub metrics: Option<Arc<Metrics>>,
}

impl Worker {
    /// Delivers until the future is dropped (the controller stops, or leadership is lost:
    /// then the records stay Pending and the next leader delivers them).
    pub async fn run(self) {
        let notifier = self.notifier.clone();
        let mut receiver = notifier.0.receiver.lock().await;
        // Jobs a former worker (an earlier leadership term) had taken are queued again by
        // the reconciles of this term.
        notifier.forget_in_flight();
        let concurrency = notifier.settings().concurrency.max(1);
        // A job queued twice (by a former term and by this one) is delivered once: a second
        // copy waits for nothing and finds the record no longer Pending.
        let active: Mutex<HashSet<Job>> = Mutex::default();
        let jobs = futures::stream::unfold(&mut *receiver, |rx| async move {
            rx.recv().await.map(|job| (job, rx))
        });
        jobs.for_each_concurrent(concurrency, |job| {
            let active = &active;
            let this = &self;
            async move {
                let fresh = active
                    .lock()
                    .map(|mut a| a.insert(job.clone()))
                    .unwrap_or(false);
                if fresh {
                    this.deliver(&job).await;
                    if let Ok(mut a) = active.lock() {
                        a.remove(&job);
                    }
                }
                this.notifier.done(&job);
            }
        })
        .await;
    }

    fn count(&self, channel: &str, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.notification(channel, outcome);
        }
    }

    /// Delivers one record, retrying transient failures with backoff.
    async fn deliver(&self, job: &Job) {
        let api: Api<SalesforceOrg> = Api::namespaced(self.client.clone(), &job.namespace);
        let settings = self.notifier.settings().clone();
        let mut failures: u32 = 0;
        loop {
            let (org, record) = match current(&api, job).await {
                Ok(Some(found)) => found,
                Ok(None) => return,
                Err(e) => {
                    warn!(org = %job.name, namespace = %job.namespace, channel = %job.channel, error = %e, "cannot read the org to deliver a notification; retrying");
                    tokio::time::sleep(crate::backoff::exponential(
                        settings.retry_first,
                        failures,
                        RETRY_MAX,
                    ))
                    .await;
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            let attempt = record.attempts + 1;
            let result = self.send(&org, &record).await;
            match result {
                Ok(()) => {
                    self.count(&job.channel, "sent");
                    info!(org = %job.name, namespace = %job.namespace, channel = %job.channel, kind = ?record.kind, key = %job.key, attempt, "notification sent");
                    mark(&api, job, DeliveryState::Sent, attempt, None).await;
                    return;
                }
                Err(e) if e.permanent || attempt >= settings.attempts => {
                    self.count(&job.channel, "failed");
                    warn!(org = %job.name, namespace = %job.namespace, channel = %job.channel, kind = ?record.kind, key = %job.key, attempt, error = %e, "notification failed; the org's state, CronJobs and other channels are unaffected");
                    mark(&api, job, DeliveryState::Failed, attempt, Some(&e.message)).await;
                    let event = Event {
                        type_: EventType::Warning,
                        reason: FAILED_EVENT.into(),
                        note: Some(truncate(format!(
                            "{:?} notification on channel {} failed after {attempt} attempt(s): {}",
                            record.kind, job.channel, e.message
                        ))),
                        action: "Notify".into(),
                        secondary: None,
                    };
                    self.recorder.publish(&event, &org.object_ref(&())).await;
                    return;
                }
                Err(e) => {
                    self.count(&job.channel, "retried");
                    warn!(org = %job.name, namespace = %job.namespace, channel = %job.channel, key = %job.key, attempt, error = %e, "notification attempt failed; will retry");
                    // The attempt count is kept in status, so a restart does not start over.
                    mark_attempt(&api, job, attempt, &e.message).await;
                    let wait =
                        crate::backoff::exponential(settings.retry_first, attempt - 1, RETRY_MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn send(
        &self,
        org: &SalesforceOrg,
        record: &NotificationRecord,
    ) -> Result<(), DeliveryError> {
        let Some(channel) = self.notifier.channels().get(&record.channel) else {
            return Err(DeliveryError::permanent(format!(
                "channel {:?} is not defined in the operator's notification channels Secret",
                record.channel
            )));
        };
        let status = org.status.clone().unwrap_or_default();
        let notice = payload::notice(
            &org.namespace().unwrap_or_default(),
            &org.name_any(),
            &status,
            record,
        );
        match channel {
            Channel::Webhook(hook) => webhook::send(&hook, &notice).await,
            Channel::Email(mail) => {
                let (_, recipients) = self.notifier.policy(org.spec.notifications.as_deref());
                email::send(&mail, &notice, &recipients.allowed).await
            }
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut end = 1000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The org and its record for `job`, while the record is Pending.
async fn current(
    api: &Api<SalesforceOrg>,
    job: &Job,
) -> Result<Option<(SalesforceOrg, NotificationRecord)>, kube::Error> {
    let Some(org) = api.get_opt(&job.name).await? else {
        return Ok(None);
    };
    if org.uid().as_deref() != Some(job.uid.as_str()) {
        return Ok(None);
    }
    let record = org
        .status
        .as_ref()
        .and_then(|s| {
            s.notifications
                .iter()
                .find(|r| r.key == job.key && r.channel == job.channel)
        })
        .filter(|r| r.state == DeliveryState::Pending)
        .cloned();
    Ok(record.map(|r| (org, r)))
}

/// Updates the record of `job` with `change`, under the org's resourceVersion (retried on a
/// conflict): a status that changed meanwhile is read again, never overwritten.
async fn update(api: &Api<SalesforceOrg>, job: &Job, change: impl Fn(&mut NotificationRecord)) {
    for _ in 0..10 {
        let org = match current(api, job).await {
            Ok(Some((org, _))) => org,
            Ok(None) => return,
            Err(e) => {
                warn!(org = %job.name, error = %e, "cannot read the org to record a notification");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut records = org.status.clone().unwrap_or_default().notifications;
        for r in records
            .iter_mut()
            .filter(|r| r.key == job.key && r.channel == job.channel)
        {
            change(r);
        }
        let patch = json!({
            "metadata": { "resourceVersion": org.resource_version() },
            "status": { "notifications": records },
        });
        let params = PatchParams {
            field_manager: Some(super::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&job.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                warn!(org = %job.name, error = %e, "cannot record a notification's delivery; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn mark(
    api: &Api<SalesforceOrg>,
    job: &Job,
    state: DeliveryState,
    attempts: u32,
    error: Option<&str>,
) {
    let now = Time(Timestamp::now());
    update(api, job, |r| {
        r.state = state;
        r.attempts = attempts;
        r.error = error.map(str::to_owned);
        if state == DeliveryState::Sent {
            r.sent_at = Some(now.clone());
        }
    })
    .await;
}

async fn mark_attempt(api: &Api<SalesforceOrg>, job: &Job, attempts: u32, error: &str) {
    update(api, job, |r| {
        r.attempts = attempts;
        r.error = Some(error.to_owned());
    })
    .await;
}
