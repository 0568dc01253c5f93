//! Carrying out an [`Outcome`](super::decide::Outcome): CronJob patches, the status write and
//! Events. Each function takes the client and the data it writes, nothing more.

use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Event;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Error;
use crate::crd::{SalesforceOrg, SalesforceOrgStatus};
use crate::dependents::{self, Change, HOLDERS_ANNOTATION, Tracker};
use crate::events::Recorder;

/// Applies CronJob changes in order, each a merge patch of `spec.suspend` and the holders
/// annotation under the CronJob's resourceVersion. Returns the changes applied before the
/// first failure, and that failure (a 409 means the CronJob changed since it was read: the
/// reconcile is retried from a fresh read).
pub async fn cronjobs(
    client: &Client,
    tracker: &Tracker,
    org: &SalesforceOrg,
    uid: &str,
    changes: &[Change],
) -> (Vec<Change>, Result<(), Error>) {
    let ns = org.namespace().unwrap_or_default();
    let name = org.name_any();
    let api: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let mut applied = Vec::new();
    for change in changes {
        let annotation = if change.holders.is_empty() {
            serde_json::Value::Null
        } else {
            json!(change.holders.iter().cloned().collect::<Vec<_>>().join(","))
        };
        let mut patch = json!({
            "metadata": {
                "resourceVersion": change.version,
                "annotations": {HOLDERS_ANNOTATION: annotation},
            },
        });
        if let Some(suspend) = change.suspend {
            patch["spec"] = json!({ "suspend": suspend });
        }
        let params = PatchParams::apply(dependents::FIELD_MANAGER);
        if let Err(e) = api
            .patch(&change.name, &params, &Patch::Merge(&patch))
            .await
        {
            return (applied, Err(Error::SyncCronJobs(e)));
        }
        if change.reasserted {
            tracker.record(uid, &change.name);
        }
        if !change.holders.contains(&name) {
            tracker.forget(uid, &change.name);
        }
        applied.push(change.clone());
    }
    if !applied.is_empty() {
        let names: Vec<&str> = applied.iter().map(|c| c.name.as_str()).collect();
        info!(org = %name, namespace = %ns, cronjobs = ?names, "dependents changed");
    }
    (applied, Ok(()))
}

/// Writes the status by server-side apply under [`crate::FIELD_MANAGER`]: the operator owns
/// every status field, so a field left out of `desired` is removed. A field last written by
/// an older operator's merge patch (owned by another operation) survives an apply, so such
/// leftovers are cleared with one merge patch. With `resource_version`, the write happens only
/// if the org is still at that version.
pub async fn status(
    client: &Client,
    org: &SalesforceOrg,
    desired: &SalesforceOrgStatus,
    resource_version: Option<&str>,
) -> Result<(), Error> {
    let ns = org.namespace().unwrap_or_default();
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    let wanted = serde_json::to_value(desired).unwrap_or_default();
    let mut body = json!({
        "apiVersion": SalesforceOrg::api_version(&()),
        "kind": SalesforceOrg::kind(&()),
        "status": &wanted,
    });
    if let Some(version) = resource_version {
        // A conflict (409) when the org changed since it was read.
        body["metadata"] = json!({ "name": org.name_any(), "resourceVersion": version });
    }
    let params = PatchParams::apply(crate::FIELD_MANAGER).force();
    let written = api
        .patch_status(&org.name_any(), &params, &Patch::Apply(&body))
        .await
        .map_err(Error::WriteStatus)?;
    let got = serde_json::to_value(written.status.unwrap_or_default()).unwrap_or_default();
    let leftovers: serde_json::Map<String, serde_json::Value> = got
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| wanted.get(key.as_str()).is_none())
        .map(|(key, _)| (key.clone(), serde_json::Value::Null))
        .collect();
    if !leftovers.is_empty() {
        let patch = json!({ "status": leftovers });
        api.patch_status(
            &org.name_any(),
            &PatchParams::apply(crate::FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::WriteStatus)?;
    }
    Ok(())
}

/// Adds (`add`) or removes the operator's finalizer, under the org's version as read (a
/// conflict when the cache is behind), and returns the org's new version.
pub async fn finalizer(client: &Client, org: &SalesforceOrg, add: bool) -> Result<String, Error> {
    let mut finalizers: Vec<String> = org
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != super::FINALIZER)
        .cloned()
        .collect();
    if add {
        finalizers.push(super::FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {"resourceVersion": org.resource_version(), "finalizers": finalizers},
    });
    let api: Api<SalesforceOrg> =
        Api::namespaced(client.clone(), &org.namespace().unwrap_or_default());
    let written = api
        .patch(
            &org.name_any(),
            &PatchParams::apply(crate::FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Finalizer)?;
    Ok(written.resource_version().unwrap_or_default())
}

/// Publishes Events about the org; a refused one is logged by the recorder and never fails
/// the reconcile.
pub async fn publish(recorder: &Recorder, org: &SalesforceOrg, events: &[Event]) {
    let regarding = org.object_ref(&());
    for event in events {
        if event.type_ == kube::runtime::events::EventType::Warning {
            warn!(org = %org.name_any(), namespace = ?org.namespace(), reason = %event.reason, "warning event");
        } else {
            info!(org = %org.name_any(), namespace = ?org.namespace(), reason = %event.reason, "event");
        }
        recorder.publish(event, &regarding).await;
    }
}
