//! One read pass over what a reconcile decides on: the spec in its checked form, the
//! credentials and token Secrets it names, what the callback recorded, what this process
//! remembers, and the link facts. The org's CronJobs are read by [`cronjobs`], only when the
//! decision touches them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::core::{PartialObjectMeta, Selector};
use kube::{Client, ResourceExt};

use super::context::HoldsAtStart;
use super::decide::{self, FlowKind, Gathered, HeldTokensState, LinkFacts, Memo};
use super::{CHECK_ANNOTATION, Error, Settings};
use crate::crd::{AuthFlow, CronJobSelector, SalesforceOrg, TokenState};
use crate::credentials;
use crate::dependents::{self, CronJobView, Tracker};
use crate::messages;
use crate::reasons::{Misconfiguration, Reason};
use crate::reauth_record::{AUTHORIZED_AT_ANNOTATION, AUTHORIZED_BY_ANNOTATION, ReauthFailure};
use crate::token_secret;

/// Reads everything the decision needs about `org` (uid `uid`) but its CronJobs.
pub async fn org(
    secrets: &Api<Secret>,
    settings: &Settings,
    org: &SalesforceOrg,
    uid: &str,
    memo: Option<Memo>,
    held: HeldTokensState,
    now: Timestamp,
) -> Result<Gathered, Error> {
    let token_secret = secrets
        .get_opt(&org.spec.token_secret_ref.name)
        .await
        .map_err(Error::ReadSecrets)?;
    let ownership = token_secret::ownership(token_secret.as_ref(), &org.name_any(), uid);
    let not_ours = ownership == token_secret::Ownership::NotOurs;
    // Someone else's Secret is neither read nor written (nor its refresh token revoked).
    let token_secret_annotations = match (&token_secret, not_ours) {
        (Some(s), false) => s.annotations().clone(),
        _ => BTreeMap::new(),
    };
    let tokens = if not_ours {
        token_secret::TokenFile::Missing
    } else {
        token_secret::read(token_secret.as_ref())
    };
    let fingerprint = decide::Fingerprint {
        generation: org.metadata.generation,
        secret_version: token_secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone()),
        check_request: org.annotations().get(CHECK_ANNOTATION).cloned(),
    };
    let spec_flow = org.spec.auth.flow();
    let web_server = matches!(spec_flow, Ok(AuthFlow::WebServer(_)));
    let status = org.status.clone().unwrap_or_default();
    let checked = checked_spec(settings, org).and_then(|spec| {
        if not_ours {
            let message =
                messages::token_secret_not_owned(&org.spec.token_secret_ref.name, &org.name_any());
            return Err(Misconfiguration::new(Reason::TokenSecretNotOwned, message));
        }
        Ok(spec)
    });
    // The credentials Secret is read by [`credentials`], only when a check is due.
    let (flow, interval) = match checked {
        Err(m) => (Err(m), crate::crd::DEFAULT_CHECK_INTERVAL),
        Ok((flow, interval)) => (Ok(flow_kind(&flow)), interval),
    };
    Ok(Gathered {
        name: org.name_any(),
        generation: org.metadata.generation,
        expected_org_id: org.spec.expected_org_id.clone(),
        web_server,
        link: link_facts(settings, org, uid, &status, web_server, now),
        status,
        flow,
        credentials: None,
        token_secret,
        tokens,
        fingerprint,
        interval: decide::jittered(interval, uid),
        phase: decide::schedule::phase(decide::jittered(interval, uid), uid),
        keepalive: settings.keepalive,
        reauth_failure: ReauthFailure::read(org.annotations()),
        memo,
        held,
        authorized_by: token_secret_annotations
            .get(AUTHORIZED_BY_ANNOTATION)
            .cloned(),
        authorized_at: authorized_at(&token_secret_annotations),
        policy: org.spec.refresh_token_policy().ok(),
        lead_times: settings.expiry_lead_times.clone(),
        unrecorded_holds: false,
    })
}

/// When the tokens were authorized: the annotation the callback writes together with the
/// tokens, or that a person sets on tokens stored by hand (RFC 3339). In whole seconds, as
/// status stores times: a fraction would read back different and rewrite status every time.
fn authorized_at(annotations: &BTreeMap<String, String>) -> Option<Time> {
    let at = annotations
        .get(AUTHORIZED_AT_ANNOTATION)?
        .parse::<Timestamp>()
        .ok()?;
    Timestamp::from_second(at.as_second()).ok().map(Time)
}

/// The spec's flow and interval, and its login host checked against the allowlist.
fn checked_spec(
    settings: &Settings,
    org: &SalesforceOrg,
) -> Result<(AuthFlow, std::time::Duration), Misconfiguration> {
    let invalid =
        |e: &dyn std::fmt::Display| Misconfiguration::new(Reason::InvalidSpec, e.to_string());
    let flow = org.spec.auth.flow().map_err(|e| invalid(&e))?;
    let interval = org.spec.check_interval().map_err(|e| invalid(&e))?;
    org.spec.refresh_token_policy().map_err(|e| invalid(&e))?;
    settings.allowlist.check(&org.spec.login_url).map_err(|e| {
        Misconfiguration::new(Reason::HostNotAllowed, format!("spec.loginUrl: {e}"))
    })?;
    Ok((flow, interval))
}

/// Adds the credentials of `org`'s flow to what was gathered, once a check is due: a check
/// needs them, and reading them on every reconcile (watch echoes, restarts) would double the
/// Secret reads. Missing or unusable credentials make the flow a configuration problem.
pub async fn credentials(
    secrets: &Api<Secret>,
    org: &SalesforceOrg,
    mut g: Gathered,
) -> Result<Gathered, Error> {
    if g.credentials.is_some() || g.flow.is_err() {
        return Ok(g);
    }
    let Ok(flow) = org.spec.auth.flow() else {
        return Ok(g);
    };
    match credentials::read(secrets, flow)
        .await
        .map_err(Error::ReadSecrets)?
    {
        Ok(c) => g.credentials = Some(c),
        Err(m) => g.flow = Err(m),
    }
    Ok(g)
}

fn flow_kind(flow: &AuthFlow) -> FlowKind {
    match flow {
        AuthFlow::WebServer(_) => FlowKind::WebServer,
        AuthFlow::JwtBearer(_) => FlowKind::JwtBearer,
        AuthFlow::ClientCredentials(_) => FlowKind::ClientCredentials,
    }
}

fn link_facts(
    settings: &Settings,
    org: &SalesforceOrg,
    uid: &str,
    status: &crate::crd::SalesforceOrgStatus,
    web_server: bool,
    now: Timestamp,
) -> LinkFacts {
    let Some(links) = settings.reauth.as_ref() else {
        return LinkFacts::default();
    };
    let ns = org.namespace().unwrap_or_default();
    let name = org.name_any();
    // A link names the spec generation it was issued for: a spec change retires it.
    let generation = org.metadata.generation.unwrap_or_default();
    LinkFacts {
        served: true,
        verifies: status
            .reauth
            .as_ref()
            .is_some_and(|link| links.verifies(link, &ns, &name, uid, generation, now)),
        fresh: web_server.then(|| links.issue(&ns, &name, uid, generation, now)),
    }
}

/// CronJobs listed per page while looking for an org's CronJobs, so a namespace with tens of
/// thousands of them is never held in memory at once.
const CRONJOB_PAGE: u32 = 500;

/// The org's CronJobs as the dependents rule sees them: those its spec selects and those it
/// holds (its name in the holders annotation). With `release_all` (deletion) none counts as
/// selected, so every hold is let go.
///
/// Only these are read in full: the label selector's matches with one list the API server
/// filters, and the CronJobs named in the spec or held but not matched by labels (relabelled
/// out) each with a GET, found by a paged metadata-only list of the namespace. So a namespace
/// with thousands of other CronJobs costs a metadata scan, not its full CronJobs.
pub async fn cronjobs(
    client: &Client,
    tracker: &Tracker,
    org: &SalesforceOrg,
    uid: &str,
    release_all: bool,
) -> Result<Vec<CronJobView>, Error> {
    let ns = org.namespace().unwrap_or_default();
    let name = org.name_any();
    let dependents = org.spec.dependents.as_ref();
    let api: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let mut found: BTreeMap<String, CronJob> = BTreeMap::new();
    let selector = dependents
        .and_then(|d| d.cron_job_selector.as_ref())
        .map(CronJobSelector::to_label_selector)
        .and_then(|s| Selector::try_from(s).ok());
    if let Some(selector) = selector.filter(|s| !s.selects_all()) {
        let params = ListParams::default().labels_from(&selector);
        for cj in api.list(&params).await.map_err(Error::ReadCronJobs)?.items {
            found.insert(cj.name_any(), cj);
        }
    }
    let mut wanted = Vec::new();
    scan_metadata(&api, |meta| {
        let cj_name = meta.name_any();
        if found.contains_key(&cj_name) {
            return;
        }
        let held = dependents::holders_of(meta.annotations()).contains(&name);
        if held || dependents::selects_meta(dependents, &cj_name, meta.labels()) {
            wanted.push(cj_name);
        }
    })
    .await?;
    for cj_name in wanted {
        if let Some(cj) = api.get_opt(&cj_name).await.map_err(Error::ReadCronJobs)? {
            found.insert(cj_name, cj);
        }
    }
    let cronjobs: Vec<CronJob> = found.into_values().collect();
    Ok(dependents::views(
        uid,
        dependents,
        &cronjobs,
        tracker,
        release_all,
    ))
}

/// Sets [`Gathered::unrecorded_holds`] for an org this process has not checked yet whose
/// status says Valid with nothing held: whether a CronJob of its namespace carried its hold
/// when the controller started (the namespace is read once, metadata only, a page at a time).
pub async fn holds_at_start(
    client: &Client,
    holds: &HoldsAtStart,
    org: &SalesforceOrg,
    mut g: Gathered,
) -> Result<Gathered, Error> {
    let unsure = g.memo.is_none()
        && g.status.state == Some(TokenState::Valid)
        && g.status.suspended_cron_jobs.is_empty();
    if !unsure {
        return Ok(g);
    }
    let ns = org.namespace().unwrap_or_default();
    g.unrecorded_holds = holds
        .held_by(&ns, &g.name, || async {
            let api: Api<CronJob> = Api::namespaced(client.clone(), &ns);
            let mut holders = BTreeSet::new();
            scan_metadata(&api, |meta| {
                holders.extend(dependents::holders_of(meta.annotations()));
            })
            .await?;
            Ok(holders)
        })
        .await?;
    Ok(g)
}

/// Visits the metadata of every CronJob `api` lists, a page at a time, so a namespace with
/// tens of thousands of them is never held in memory at once.
async fn scan_metadata(
    api: &Api<CronJob>,
    mut visit: impl FnMut(&PartialObjectMeta<CronJob>),
) -> Result<(), Error> {
    let mut params = ListParams::default().limit(CRONJOB_PAGE);
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(Error::ReadCronJobs)?;
        page.items.iter().for_each(&mut visit);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_at_is_read_in_whole_seconds() {
        let read = |v: &str| {
            authorized_at(&BTreeMap::from([(
                AUTHORIZED_AT_ANNOTATION.to_owned(),
                v.to_owned(),
            )]))
            .map(|t| t.0.to_string())
        };
        assert_eq!(
            read("2026-01-31T09:00:00Z").as_deref(),
            Some("2026-01-31T09:00:00Z")
        );
        assert_eq!(
            read("2026-01-31T09:00:00.75Z").as_deref(),
            Some("2026-01-31T09:00:00Z")
        );
        assert_eq!(read("yesterday"), None);
    }
}
