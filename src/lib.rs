//! A Kubernetes operator that keeps Salesforce org connections alive.
//!
//! Each `SalesforceOrg` names an org, how to authenticate and which backup CronJobs depend on
//! it. The operator keeps the org's tokens in a Secret, checks them against Salesforce, reports
//! `TokenValid` / `TokenExpired`, pauses dependents while a person must log in again, and
//! resumes exactly what it paused once the org is healthy.

pub mod backoff;
pub mod callback;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod dashboard;
pub mod dependents;
pub mod duration;
pub mod events;
pub mod http_server;
pub mod leader;
pub mod manifests;
pub mod messages;
pub mod metrics;
pub mod namespaces;
pub mod notify;
pub mod pinning;
pub mod plugin;
pub mod reasons;
pub mod reauth_record;
pub mod reconcile;
pub mod requeue;
pub mod salesforce;
pub mod secret;
pub mod setup_check;
pub mod telemetry;
pub mod token_secret;
pub mod token_store;

/// The field manager of the operator's own writes (status, token Secrets, org annotations).
pub const FIELD_MANAGER: &str = "sforg-operator";
