//! Publishing Kubernetes Events about orgs.
//!
//! kube-runtime's `Recorder` keeps every Event it sent for six minutes (to merge repeats into
//! a series) and scans that cache on every publish. The operator only emits an Event when
//! something changes, so there is nothing to merge, and at 10k orgs that cache would cost tens
//! of MiB and a quadratic scan during a cold start. This publisher just creates the Event.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use tracing::warn;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Creates `events.k8s.io/v1` Events, one per call.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
}

impl Recorder {
    /// A publisher reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Publishes `event` about `regarding`, in its namespace. Events are informational: a
    /// refused one is logged and never fails the reconcile that emitted it.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) {
        if let Err(e) = self.create(event, regarding).await {
            warn!(error = %e, reason = %event.reason, "could not publish an event");
        }
    }

    async fn create(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = regarding.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        // Named like kubectl's events: the object's name and a unique hex suffix.
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let body = KubeEvent {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}{seq:04x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        Api::<KubeEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &body)
            .await?;
        Ok(())
    }
}
