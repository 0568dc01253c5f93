//! Telling the person who must log in: notifications over channels the cluster administrator
//! defines (webhook, email), at least once per transition with an idempotency key.
//!
//! - [`config`]: the channels Secret, parsed and watched.
//! - [`payload`]: what a notification says (versioned JSON, Slack text, email bodies).
//! - [`webhook`], [`email`]: one delivery attempt on a channel.
//! - [`deliver`]: the worker that delivers recorded notifications, with bounded concurrency
//!   and retries, outside the reconcile.
//!
//! What is due is decided by `reconcile::decide::notices` (pure) and recorded as Pending in
//! `status.notifications` by the reconcile's status write; [`Notifier::submit`] hands every
//! Pending record to the worker, which marks it Sent or Failed with its own status patch.

pub mod config;
pub mod deliver;
pub mod email;
pub mod payload;
pub mod webhook;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::mpsc;

use crate::crd::{DeliveryState, NotificationsSpec, SalesforceOrg, SalesforceOrgStatus};
use crate::reconcile::decide::notices::Policy;

/// The field manager of the worker's status patches (apart from the reconcile's).
pub const FIELD_MANAGER: &str = "sforg-operator-notify";

/// One failed delivery attempt.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct DeliveryError {
    /// Retrying cannot help (a refused login, an unknown recipient, a 4xx).
    pub permanent: bool,
    /// What went wrong, naming the host, never a secret.
    pub message: String,
}

impl DeliveryError {
    /// A failure that may pass.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure that will not pass by itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

/// The administrator's notification settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Channels for orgs that name none.
    pub default_channels: Vec<String>,
    /// Email recipients must be in one of these domains (or a subdomain); none allowed when
    /// empty.
    pub recipient_domains: Vec<String>,
    /// Time between reminders while an org stays expired.
    pub reminder_interval: Duration,
    /// Reminders per expiry, at most.
    pub reminder_max: u32,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Attempts per notification and channel before it is marked Failed.
    pub attempts: u32,
    /// The wait after the first failed attempt (doubled after each, at most a minute).
    pub retry_first: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_channels: Vec::new(),
            recipient_domains: Vec::new(),
            reminder_interval: Duration::from_secs(24 * 3600),
            reminder_max: 3,
            concurrency: 16,
            attempts: 5,
            retry_first: Duration::from_secs(2),
        }
    }
}

/// A recipient split into those allowed and those refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Receive mail.
    pub allowed: Vec<String>,
    /// Outside the allowed domains: nothing is sent to them.
    pub refused: Vec<String>,
}

/// Splits `recipients` by `domains` (exact domain or a subdomain, case-insensitive).
pub fn split_recipients(recipients: &[String], domains: &[String]) -> Recipients {
    let mut out = Recipients::default();
    for r in recipients {
        let domain = r
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default();
        let ok = !domain.is_empty()
            && domains.iter().any(|d| {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                domain == d || domain.ends_with(&format!(".{d}"))
            });
        if ok {
            out.allowed.push(r.clone());
        } else {
            out.refused.push(r.clone());
        }
    }
    out
}

/// A record to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    /// The org's namespace.
    pub namespace: String,
    /// The org's name.
    pub name: String,
    /// The org's uid (a recreated org is another org).
    pub uid: String,
    /// The record's key.
    pub key: String,
    /// The record's channel.
    pub channel: String,
}

struct Inner {
    settings: Settings,
    channels: config::Store,
    queue: mpsc::UnboundedSender<Job>,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    in_flight: Mutex<HashSet<Job>>,
}

/// The notification side of the operator: the settings, the channels in force, and the
/// queue of the delivery worker. Clones share all of it.
#[derive(Clone)]
pub struct Notifier(Arc<Inner>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.0.settings)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier with `settings`, delivering on the channels in `channels`.
    pub fn new(settings: Settings, channels: config::Store) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        Self(Arc::new(Inner {
            settings,
            channels,
            queue,
            receiver: tokio::sync::Mutex::new(receiver),
            in_flight: Mutex::default(),
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The channels in force.
    pub fn channels(&self) -> &config::Store {
        &self.0.channels
    }

    /// What the decision needs for an org with `spec`.
    pub fn policy(&self, spec: Option<&NotificationsSpec>) -> (Policy, Recipients) {
        let s = &self.0.settings;
        let channels = match spec {
            Some(n) if !n.channels.is_empty() => n.channels.clone(),
            _ => s.default_channels.clone(),
        };
        let recipients = split_recipients(
            spec.map(|n| n.recipients.as_slice()).unwrap_or_default(),
            &s.recipient_domains,
        );
        (
            Policy {
                channels,
                reminder_interval: s.reminder_interval,
                reminder_max: s.reminder_max,
            },
            recipients,
        )
    }

    /// Hands every Pending record of `org` (with `status`) to the worker, once per process.
    pub fn submit(&self, org: &SalesforceOrg, status: &SalesforceOrgStatus) {
        let (Some(namespace), Some(uid)) = (org.namespace(), org.uid()) else {
            return;
        };
        for record in &status.notifications {
            if record.state != DeliveryState::Pending {
                continue;
            }
            let job = Job {
                namespace: namespace.clone(),
                name: org.name_any(),
                uid: uid.clone(),
                key: record.key.clone(),
                channel: record.channel.clone(),
            };
            let fresh = self
                .0
                .in_flight
                .lock()
                .map(|mut set| set.insert(job.clone()))
                .unwrap_or(false);
            if fresh {
                let _ = self.0.queue.send(job);
            }
        }
    }

    fn done(&self, job: &Job) {
        if let Ok(mut set) = self.0.in_flight.lock() {
            set.remove(job);
        }
    }

    fn forget_in_flight(&self) {
        if let Ok(mut set) = self.0.in_flight.lock() {
            set.clear();
        }
    }
}

/// An error and its sources, joined by ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_limited_to_allowed_domains() {
        let r = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let got = split_recipients(
            &r(&[
                "a@acme.example",
                "b@EU.Acme.Example",
                "c@evil.example",
                "d@acme.example.evil",
                "e@notacme.example",
            ]),
            &r(&["acme.example"]),
        );
        assert_eq!(got.allowed, r(&["a@acme.example", "b@EU.Acme.Example"]));
        assert_eq!(
            got.refused,
            r(&["c@evil.example", "d@acme.example.evil", "e@notacme.example"])
        );
        assert_eq!(
            split_recipients(&r(&["a@acme.example"]), &[]).refused.len(),
            1
        );
    }
}
