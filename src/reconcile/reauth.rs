//! The person-facing part of status: the re-auth link while a web server org needs a person,
//! and why the last login through it failed. The rules are pure functions in [`decide`];
//! this feeds them what was observed and signs new links.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Settings;
use super::decide::{self, LinkPlan};
use super::observe::Seen;
use crate::crd::{AuthFlow, SalesforceOrg, SalesforceOrgStatus};

/// Updates the status about to be written; returns how long until its link must be renewed.
pub fn settle(
    settings: &Settings,
    org: &SalesforceOrg,
    seen: &Seen,
    status: &mut SalesforceOrgStatus,
    now: Timestamp,
) -> Option<Duration> {
    let ns = org.namespace().unwrap_or_default();
    let name = org.name_any();
    let uid = org.uid().unwrap_or_default();
    let web_server = matches!(org.spec.auth.flow(), Ok(AuthFlow::WebServer(_)));
    let links = settings.reauth.as_ref();
    let generation = org.metadata.generation.unwrap_or_default();
    let verifies = match (links, &status.reauth) {
        (Some(l), Some(link)) => l.verifies(link, &ns, &name, &uid, generation, now),
        _ => false,
    };
    let plan = decide::link_plan(
        web_server,
        links.is_some(),
        status.state,
        status.reauth.as_ref(),
        verifies,
        now,
    );
    match (plan, links) {
        (LinkPlan::Issue, Some(l)) => {
            status.reauth = Some(l.issue(&ns, &name, &uid, generation, now))
        }
        (LinkPlan::Remove, _) => status.reauth = None,
        _ => {}
    }
    let generation = org.metadata.generation;
    if let Some(failure) = &seen.reauth_failure {
        let version = seen
            .secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.as_deref());
        decide::report_failure(status, failure, web_server, version, generation, now);
    }
    decide::awaiting_with_link(status, generation, now);
    status
        .reauth
        .as_ref()
        .map(|link| decide::link_renew_in(link, now))
}
