//! Dependent CronJobs: suspend them while an org is Expired, resume exactly those afterwards.
//!
//! Each CronJob records which orgs hold it in the annotation [`HOLDERS_ANNOTATION`] (a set,
//! because one backup can depend on several orgs). The operator suspends a CronJob only when
//! it is running, and resumes it only when the last holder lets go and it is still suspended,
//! so a CronJob a person suspended is never resumed by us. [`plan`] is the pure rule;
//! [`sync`] applies it with merge patches that touch only `spec.suspend` and that annotation,
//! under their own field manager, guarded by the CronJob's resourceVersion.
//!
//! Resuming does not cause a burst of missed runs: the CronJob controller starts at most the
//! most recent missed schedule, and only within `startingDeadlineSeconds` when that is set.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::CronJob;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::crd::{Dependents, SalesforceOrg};

/// The annotation listing the orgs (in the CronJob's namespace) that hold it suspended.
pub const HOLDERS_ANNOTATION: &str = "orgtokens.dev/suspended-by";
/// The field manager of CronJob patches, so GitOps tools can ignore exactly these fields.
pub const FIELD_MANAGER: &str = "sforg-operator-dependents";

/// What the rule needs to know of one CronJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronJobView {
    /// Its name.
    pub name: String,
    /// `spec.suspend`.
    pub suspended: bool,
    /// Orgs holding it.
    pub holders: BTreeSet<String>,
    /// Whether this org's `spec.dependents` selects it.
    pub selected: bool,
    /// Whether the hold may be re-asserted now if someone resumed the CronJob behind our back
    /// (at most once per backoff step, so the operator never fights another writer in a loop).
    pub may_reassert: bool,
}

/// A change to one CronJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The CronJob.
    pub name: String,
    /// The new `spec.suspend`, when it changes.
    pub suspend: Option<bool>,
    /// The new holder set.
    pub holders: BTreeSet<String>,
}

/// What an org wants of its dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Expired: hold every selected CronJob.
    Hold,
    /// Not known to be healthy (an outage while expired, a configuration problem): keep the
    /// holds there are, take no new ones.
    Keep,
    /// Valid, or being deleted: let go of everything.
    Release,
}

/// The changes that make `org`'s holds right: in [`Mode::Hold`], every selected CronJob that
/// is running is suspended and held; in [`Mode::Release`] (and for CronJobs no longer
/// selected) the org lets go, and a CronJob resumes when nobody else holds it.
pub fn plan(org: &str, mode: Mode, cronjobs: &[CronJobView]) -> Vec<Change> {
    let mut changes = Vec::new();
    for cj in cronjobs {
        let held_by_us = cj.holders.contains(org);
        let mut holders = cj.holders.clone();
        if mode == Mode::Keep && cj.selected {
            continue;
        }
        if mode == Mode::Hold && cj.selected {
            if held_by_us {
                // Someone resumed a CronJob we hold: re-assert, but only at backoff.
                if !cj.suspended && cj.may_reassert {
                    changes.push(Change {
                        name: cj.name.clone(),
                        suspend: Some(true),
                        holders,
                    });
                }
                continue;
            }
            if !cj.suspended {
                holders.insert(org.to_owned());
                changes.push(Change {
                    name: cj.name.clone(),
                    suspend: Some(true),
                    holders,
                });
            } else if !cj.holders.is_empty() {
                // Suspended by another org: share the hold so it stays paused until both let go.
                holders.insert(org.to_owned());
                changes.push(Change {
                    name: cj.name.clone(),
                    suspend: None,
                    holders,
                });
            }
            // Suspended with no holders: a person's decision; leave it alone.
        } else if held_by_us {
            holders.remove(org);
            let resume = holders.is_empty() && cj.suspended;
            changes.push(Change {
                name: cj.name.clone(),
                suspend: resume.then_some(false),
                holders,
            });
        }
    }
    changes
}

/// The names this org holds after `changes`.
pub fn held_after(org: &str, cronjobs: &[CronJobView], changes: &[Change]) -> Vec<String> {
    let mut held: BTreeSet<String> = cronjobs
        .iter()
        .filter(|c| c.holders.contains(org))
        .map(|c| c.name.clone())
        .collect();
    for c in changes {
        if c.holders.contains(org) {
            held.insert(c.name.clone());
        } else {
            held.remove(&c.name);
        }
    }
    held.into_iter().collect()
}

/// CronJob names for people to read, at most `max_chars` long: as many as fit, then how many
/// more. Event notes are limited to 1 KiB, and a condition naming thousands of CronJobs helps
/// nobody; `status.suspendedCronJobs` keeps the full list.
pub fn name_list(names: &[String], max_chars: usize) -> String {
    let all = names.join(", ");
    if all.len() <= max_chars {
        return all;
    }
    let mut shown = String::new();
    let mut count = 0;
    for name in names {
        let separator = if count == 0 { "" } else { ", " };
        let more = format!(" and {} more", names.len() - count - 1);
        if shown.len() + separator.len() + name.len() + more.len() > max_chars {
            break;
        }
        shown.push_str(separator);
        shown.push_str(name);
        count += 1;
    }
    if count == 0 {
        return format!("{} CronJobs", names.len());
    }
    format!("{shown} and {} more", names.len() - count)
}

/// Parses the holders annotation.
pub fn holders(cj: &CronJob) -> BTreeSet<String> {
    cj.annotations()
        .get(HOLDERS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn selects(dependents: Option<&Dependents>, cj: &CronJob) -> bool {
    let Some(d) = dependents else {
        return false;
    };
    let by_name = d
        .cron_job_names
        .as_ref()
        .is_some_and(|names| names.iter().any(|n| *n == cj.name_any()));
    let by_label = d.cron_job_selector.as_ref().is_some_and(|sel| {
        let labels = cj.labels();
        let match_labels = sel
            .match_labels
            .as_ref()
            .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
        let match_exprs = sel.match_expressions.as_ref().is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let value = labels.get(&e.key);
                let values = e.values.clone().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
        });
        match_labels && match_exprs
    });
    by_name || by_label
}

/// The result of one sync.
#[derive(Debug, Default)]
pub struct Synced {
    /// CronJobs this org holds now.
    pub held: Vec<String>,
    /// CronJobs suspended by this sync.
    pub suspended: Vec<String>,
    /// CronJobs resumed by this sync.
    pub resumed: Vec<String>,
    /// CronJobs this org holds that someone else resumed (re-asserted or waiting for backoff).
    pub overridden: Vec<String>,
}

/// Remembers, per org and CronJob, when a hold was last re-asserted against another writer,
/// so re-assertions back off: at once, then after 30 s, 1 min, 2 min ... at most 10 min.
#[derive(Default)]
pub struct Tracker {
    reasserts:
        std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, u32)>>,
}

impl Tracker {
    fn may_reassert(&self, org_uid: &str, cronjob: &str) -> bool {
        let Ok(map) = self.reasserts.lock() else {
            return false;
        };
        match map.get(&(org_uid.to_owned(), cronjob.to_owned())) {
            None => true,
            Some((at, count)) => at.elapsed() >= reassert_backoff(*count),
        }
    }

    fn record(&self, org_uid: &str, cronjob: &str) {
        if let Ok(mut map) = self.reasserts.lock() {
            let entry = map
                .entry((org_uid.to_owned(), cronjob.to_owned()))
                .or_insert((std::time::Instant::now(), 0));
            *entry = (std::time::Instant::now(), entry.1 + 1);
        }
    }

    fn forget(&self, org_uid: &str, cronjob: &str) {
        if let Ok(mut map) = self.reasserts.lock() {
            map.remove(&(org_uid.to_owned(), cronjob.to_owned()));
        }
    }
}

/// The wait before the next re-assertion after `count` of them.
pub fn reassert_backoff(count: u32) -> std::time::Duration {
    let secs = 15u64.saturating_mul(1u64 << count.min(6));
    std::time::Duration::from_secs(secs.min(600))
}

/// Lists the namespace's CronJobs and applies [`plan`]. With `release_all` every hold of
/// the org is released, selected or not (deletion). A patch that loses a race (409) is
/// planned again from a fresh list, a few times, before the error goes back to the caller.
pub async fn sync(
    client: &kube::Client,
    tracker: &Tracker,
    org: &SalesforceOrg,
    ns: &str,
    mode: Mode,
    release_all: bool,
) -> Result<Synced, kube::Error> {
    let mut synced = Synced::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sync_once(client, tracker, org, ns, mode, release_all, &mut synced).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 4 => continue,
            other => return other.map(|()| synced),
        }
    }
}

async fn sync_once(
    client: &kube::Client,
    tracker: &Tracker,
    org: &SalesforceOrg,
    ns: &str,
    mode: Mode,
    release_all: bool,
    synced: &mut Synced,
) -> Result<(), kube::Error> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await?;
    let name = org.name_any();
    let uid = org.uid().unwrap_or_default();
    let views: Vec<CronJobView> = list
        .items
        .iter()
        .map(|cj| CronJobView {
            name: cj.name_any(),
            suspended: cj.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false),
            holders: holders(cj),
            selected: !release_all && selects(org.spec.dependents.as_ref(), cj),
            may_reassert: tracker.may_reassert(&uid, &cj.name_any()),
        })
        .collect();
    let mode = if release_all { Mode::Release } else { mode };
    let changes = plan(&name, mode, &views);
    synced.held = held_after(&name, &views, &changes);
    synced.overridden = views
        .iter()
        .filter(|v| mode == Mode::Hold && v.selected && v.holders.contains(&name) && !v.suspended)
        .map(|v| v.name.clone())
        .collect();
    for change in &changes {
        let view = views.iter().find(|v| v.name == change.name);
        let version = list
            .items
            .iter()
            .find(|c| c.name_any() == change.name)
            .and_then(|c| c.resource_version());
        let annotation = if change.holders.is_empty() {
            serde_json::Value::Null
        } else {
            json!(change.holders.iter().cloned().collect::<Vec<_>>().join(","))
        };
        let mut patch = json!({
            "metadata": {"resourceVersion": version, "annotations": {HOLDERS_ANNOTATION: annotation}},
        });
        if let Some(suspend) = change.suspend {
            patch["spec"] = json!({"suspend": suspend});
        }
        api.patch(
            &change.name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await?;
        let reasserted = view.is_some_and(|v| v.holders.contains(&name));
        match change.suspend {
            Some(true) if reasserted => tracker.record(&uid, &change.name),
            Some(true) => synced.suspended.push(change.name.clone()),
            Some(false) => synced.resumed.push(change.name.clone()),
            None => {}
        }
        if !change.holders.contains(&name) {
            tracker.forget(&uid, &change.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassert_backoff_grows_and_caps() {
        let got: Vec<u64> = (0..8).map(|c| reassert_backoff(c).as_secs()).collect();
        assert_eq!(got, [15, 30, 60, 120, 240, 480, 600, 600]);
    }

    fn cj(name: &str, suspended: bool, holders: &[&str], selected: bool) -> CronJobView {
        CronJobView {
            name: name.into(),
            suspended,
            holders: holders.iter().map(|s| (*s).to_owned()).collect(),
            selected,
            may_reassert: false,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn plan_table() {
        let change = |name: &str, suspend: Option<bool>, holders: &[&str]| Change {
            name: name.into(),
            suspend,
            holders: set(holders),
        };
        let cases: Vec<(&str, bool, CronJobView, Vec<Change>)> = vec![
            (
                "expired: suspend a running job",
                true,
                cj("a", false, &[], true),
                vec![change("a", Some(true), &["acme"])],
            ),
            (
                "expired: already held",
                true,
                cj("a", true, &["acme"], true),
                vec![],
            ),
            (
                "expired: person suspended it",
                true,
                cj("a", true, &[], true),
                vec![],
            ),
            (
                "expired: another org holds it",
                true,
                cj("a", true, &["beta"], true),
                vec![change("a", None, &["acme", "beta"])],
            ),
            (
                "expired: not selected",
                true,
                cj("a", false, &[], false),
                vec![],
            ),
            (
                "expired: relabelled out",
                true,
                cj("a", true, &["acme"], false),
                vec![change("a", Some(false), &[])],
            ),
            (
                "valid: resume ours",
                false,
                cj("a", true, &["acme"], true),
                vec![change("a", Some(false), &[])],
            ),
            (
                "valid: shared, keep suspended",
                false,
                cj("a", true, &["acme", "beta"], true),
                vec![change("a", None, &["beta"])],
            ),
            (
                "valid: someone resumed it already",
                false,
                cj("a", false, &["acme"], true),
                vec![change("a", None, &[])],
            ),
            (
                "valid: person's suspension untouched",
                false,
                cj("a", true, &[], true),
                vec![],
            ),
            (
                "valid: nothing held",
                false,
                cj("a", false, &[], true),
                vec![],
            ),
        ];
        for (what, hold, view, want) in cases {
            let mode = if hold { Mode::Hold } else { Mode::Release };
            assert_eq!(plan("acme", mode, &[view]), want, "{what}");
        }
        // Resumed behind our back: re-asserted only when the backoff allows.
        let mut overridden = cj("a", false, &["acme"], true);
        assert_eq!(
            plan("acme", Mode::Hold, std::slice::from_ref(&overridden)),
            vec![]
        );
        overridden.may_reassert = true;
        assert_eq!(
            plan("acme", Mode::Hold, &[overridden]),
            vec![change("a", Some(true), &["acme"])]
        );
        // Keep: no new holds, no releases of selected jobs, but let go of unselected ones.
        assert_eq!(
            plan("acme", Mode::Keep, &[cj("a", false, &[], true)]),
            vec![]
        );
        assert_eq!(
            plan("acme", Mode::Keep, &[cj("a", true, &["acme"], true)]),
            vec![]
        );
        assert_eq!(
            plan("acme", Mode::Keep, &[cj("a", true, &["acme"], false)]),
            vec![change("a", Some(false), &[])]
        );
    }

    #[test]
    fn name_lists_are_bounded() {
        let names: Vec<String> = (0..2000).map(|i| format!("backup-{i:04}")).collect();
        assert_eq!(
            name_list(&names[..3], 100),
            "backup-0000, backup-0001, backup-0002"
        );
        let long = name_list(&names, 100);
        assert!(long.len() <= 100, "{long}");
        assert!(long.starts_with("backup-0000, backup-0001"), "{long}");
        assert!(long.ends_with(" more"), "{long}");
        let shown = long.matches("backup-").count();
        assert!(
            long.ends_with(&format!(" and {} more", 2000 - shown)),
            "{long}"
        );
        assert_eq!(name_list(&names, 5), "2000 CronJobs");
        assert_eq!(name_list(&[], 10), "");
    }

    #[test]
    fn held_after_reflects_changes() {
        let views = vec![
            cj("a", false, &[], true),
            cj("b", true, &["acme"], false),
            cj("c", true, &["acme"], true),
        ];
        let changes = plan("acme", Mode::Hold, &views);
        assert_eq!(
            held_after("acme", &views, &changes),
            vec!["a".to_owned(), "c".to_owned()]
        );
    }
}
