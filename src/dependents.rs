//! Dependent CronJobs: suspend them while an org is Expired, resume exactly those afterwards.
//!
//! Each CronJob records which orgs hold it in the annotation [`HOLDERS_ANNOTATION`] (a set,
//! because one backup can depend on several orgs). The operator suspends a CronJob only when
//! it is running, and resumes it only when the last holder lets go and it is still suspended,
//! so a CronJob a person suspended is never resumed by us. [`plan`] is the pure rule over
//! [`CronJobView`]s; the reconciler reads the CronJobs and applies the [`Change`]s with merge
//! patches that touch only `spec.suspend` and that annotation, under [`FIELD_MANAGER`],
//! guarded by each CronJob's resourceVersion.
//!
//! Resuming does not cause a burst of missed runs: the CronJob controller starts at most the
//! most recent missed schedule, and only within `startingDeadlineSeconds` when that is set.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::CronJob;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::crd::Dependents;

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
    /// When it may not: how long until it may (the reconcile looks again then; nothing else
    /// would, since the CronJob watch reports only changes).
    pub reassert_in: std::time::Duration,
    /// Its resourceVersion, the precondition of a patch.
    pub version: Option<String>,
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
    /// A hold this org already had, suspended again after someone resumed the CronJob.
    pub reasserted: bool,
    /// The CronJob's resourceVersion as read.
    pub version: Option<String>,
}

impl Change {
    fn of(cj: &CronJobView, suspend: Option<bool>, holders: BTreeSet<String>) -> Self {
        Change {
            name: cj.name.clone(),
            suspend,
            holders,
            reasserted: false,
            version: cj.version.clone(),
        }
    }
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
                    let mut change = Change::of(cj, Some(true), holders);
                    change.reasserted = true;
                    changes.push(change);
                }
                continue;
            }
            if !cj.suspended {
                holders.insert(org.to_owned());
                changes.push(Change::of(cj, Some(true), holders));
            } else if !cj.holders.is_empty() {
                // Suspended by another org: share the hold so it stays paused until both let go.
                holders.insert(org.to_owned());
                changes.push(Change::of(cj, None, holders));
            }
            // Suspended with no holders: a person's decision; leave it alone.
        } else if held_by_us {
            holders.remove(org);
            let resume = holders.is_empty() && cj.suspended;
            changes.push(Change::of(cj, resume.then_some(false), holders));
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

/// Parses the holders annotation.
pub fn holders(cj: &CronJob) -> BTreeSet<String> {
    parse_holders(cj.annotations().get(HOLDERS_ANNOTATION))
}

/// Whether `dependents` selects `cj`, by name or by label selector. A selector the API
/// server would refuse (an unknown operator) selects nothing.
pub fn selects(dependents: Option<&Dependents>, cj: &CronJob) -> bool {
    selects_meta(dependents, &cj.name_any(), cj.labels())
}

/// [`selects`] from a CronJob's name and labels (all a metadata-only watch event carries).
pub fn selects_meta(
    dependents: Option<&Dependents>,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let Some(d) = dependents else {
        return false;
    };
    let by_name = d
        .cron_job_names
        .as_ref()
        .is_some_and(|names| names.iter().any(|n| n == name));
    let by_label = d.cron_job_selector.as_ref().is_some_and(|sel| {
        Selector::try_from(sel.to_label_selector()).is_ok_and(|selector| selector.matches(labels))
    });
    by_name || by_label
}

/// The holders named in a CronJob's annotations (from its metadata alone).
pub fn holders_of(annotations: &std::collections::BTreeMap<String, String>) -> BTreeSet<String> {
    parse_holders(annotations.get(HOLDERS_ANNOTATION))
}

/// Parses a holders annotation value.
fn parse_holders(value: Option<&String>) -> BTreeSet<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// What an org's CronJobs look like to [`plan`]. With `release_all` (deletion) nothing counts
/// as selected, so every hold is let go.
pub fn views(
    org_uid: &str,
    dependents: Option<&Dependents>,
    cronjobs: &[CronJob],
    tracker: &Tracker,
    release_all: bool,
) -> Vec<CronJobView> {
    cronjobs
        .iter()
        .map(|cj| CronJobView {
            name: cj.name_any(),
            suspended: cj.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false),
            holders: holders(cj),
            selected: !release_all && selects(dependents, cj),
            may_reassert: tracker.may_reassert(org_uid, &cj.name_any()),
            reassert_in: tracker.reassert_in(org_uid, &cj.name_any()),
            version: cj.resource_version(),
        })
        .collect()
}

/// The CronJobs this org holds that someone else resumed (re-asserted at backoff).
pub fn overridden(org: &str, mode: Mode, cronjobs: &[CronJobView]) -> Vec<String> {
    cronjobs
        .iter()
        .filter(|v| mode == Mode::Hold && v.selected && v.holders.contains(org) && !v.suspended)
        .map(|v| v.name.clone())
        .collect()
}

/// The orgs that hold CronJobs or must (Expired), by namespace, with their `spec.dependents`:
/// what a CronJob watch event is matched against. The reconciler marks an org before it lists
/// the CronJobs it decides on and unmarks it once it holds nothing, so a CronJob created or
/// relabelled after that list always finds its org here. Its size is the number of holding
/// orgs, whatever the number of CronJobs.
#[derive(Default)]
pub struct Holding {
    by_namespace: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::HashMap<String, Option<Dependents>>>,
    >,
}

impl Holding {
    /// Marks (or updates) an org that holds or must hold.
    pub fn mark(&self, namespace: &str, org: &str, dependents: Option<&Dependents>) {
        if let Ok(mut map) = self.by_namespace.lock() {
            map.entry(namespace.to_owned())
                .or_default()
                .insert(org.to_owned(), dependents.cloned());
        }
    }

    /// Unmarks an org that holds nothing any more (or is gone).
    pub fn unmark(&self, namespace: &str, org: &str) {
        if let Ok(mut map) = self.by_namespace.lock()
            && let Some(orgs) = map.get_mut(namespace)
        {
            orgs.remove(org);
            if orgs.is_empty() {
                map.remove(namespace);
            }
        }
    }

    /// The orgs a change to this CronJob (its metadata as it is now) concerns: the holding orgs
    /// of its namespace that select it (created or relabelled in), and the orgs its holders
    /// annotation names (relabelled out, resumed by someone, deleted).
    pub fn concerned(
        &self,
        namespace: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        let mut orgs = parse_holders(annotations.get(HOLDERS_ANNOTATION));
        if let Ok(map) = self.by_namespace.lock()
            && let Some(holding) = map.get(namespace)
        {
            orgs.extend(
                holding
                    .iter()
                    .filter(|(_, d)| selects_meta(d.as_ref(), name, labels))
                    .map(|(org, _)| org.clone()),
            );
        }
        orgs
    }

    /// How many orgs are marked.
    pub fn len(&self) -> usize {
        self.by_namespace
            .lock()
            .map(|m| m.values().map(|o| o.len()).sum())
            .unwrap_or(0)
    }

    /// Whether no org is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Remembers, per org and CronJob, when a hold was last re-asserted against another writer,
/// so re-assertions back off: at once, then after 30 s, 1 min, 2 min ... at most 10 min.
#[derive(Default)]
pub struct Tracker {
    reasserts:
        std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, u32)>>,
}

impl Tracker {
    /// Whether a hold may be re-asserted now.
    pub fn may_reassert(&self, org_uid: &str, cronjob: &str) -> bool {
        let Ok(map) = self.reasserts.lock() else {
            return false;
        };
        match map.get(&(org_uid.to_owned(), cronjob.to_owned())) {
            None => true,
            Some((at, count)) => at.elapsed() >= reassert_backoff(*count),
        }
    }

    /// How long until a hold may be re-asserted (zero when it may now).
    pub fn reassert_in(&self, org_uid: &str, cronjob: &str) -> std::time::Duration {
        let Ok(map) = self.reasserts.lock() else {
            return std::time::Duration::ZERO;
        };
        match map.get(&(org_uid.to_owned(), cronjob.to_owned())) {
            None => std::time::Duration::ZERO,
            Some((at, count)) => reassert_backoff(*count).saturating_sub(at.elapsed()),
        }
    }

    /// Records a re-assertion.
    pub fn record(&self, org_uid: &str, cronjob: &str) {
        if let Ok(mut map) = self.reasserts.lock() {
            let entry = map
                .entry((org_uid.to_owned(), cronjob.to_owned()))
                .or_insert((std::time::Instant::now(), 0));
            *entry = (std::time::Instant::now(), entry.1 + 1);
        }
    }

    /// Forgets a hold the org let go of.
    pub fn forget(&self, org_uid: &str, cronjob: &str) {
        if let Ok(mut map) = self.reasserts.lock() {
            map.remove(&(org_uid.to_owned(), cronjob.to_owned()));
        }
    }
}

/// The wait before the next re-assertion after `count` of them: 15 s doubling to 10 min.
pub fn reassert_backoff(count: u32) -> std::time::Duration {
    use std::time::Duration;
    crate::backoff::exponential(Duration::from_secs(15), count, Duration::from_secs(600))
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
            reassert_in: std::time::Duration::ZERO,
            version: None,
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
            reasserted: false,
            version: None,
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
        let mut reasserted = change("a", Some(true), &["acme"]);
        reasserted.reasserted = true;
        assert_eq!(plan("acme", Mode::Hold, &[overridden]), vec![reasserted]);
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
    fn a_cronjob_event_concerns_the_holding_orgs_that_select_it_and_its_holders() {
        let by_label = |v: &str| Dependents {
            cron_job_selector: Some(
                serde_json::from_value(serde_json::json!({"matchLabels": {"backup-of": v}}))
                    .expect("selector"),
            ),
            cron_job_names: None,
        };
        let holding = Holding::default();
        holding.mark("a", "acme", Some(&by_label("acme")));
        holding.mark("a", "beta", Some(&by_label("beta")));
        holding.mark("b", "acme", Some(&by_label("acme")));
        let labels = |v: &str| [("backup-of".to_owned(), v.to_owned())].into();
        let none = std::collections::BTreeMap::new();
        let held_by = |v: &str| {
            [(HOLDERS_ANNOTATION.to_owned(), v.to_owned())]
                .into_iter()
                .collect()
        };
        type Map = std::collections::BTreeMap<String, String>;
        let cases: Vec<(&str, &str, Map, Map, Vec<&str>)> = vec![
            (
                "created into acme's selector",
                "a",
                labels("acme"),
                none.clone(),
                vec!["acme"],
            ),
            ("other namespace", "b", labels("beta"), none.clone(), vec![]),
            (
                "nobody selects it",
                "a",
                labels("gamma"),
                none.clone(),
                vec![],
            ),
            (
                "relabelled out of beta's",
                "a",
                labels("gamma"),
                held_by("beta"),
                vec!["beta"],
            ),
            (
                "namespace with no holder",
                "c",
                labels("acme"),
                held_by("x, y"),
                vec!["x", "y"],
            ),
        ];
        for (what, ns, labels, annotations, want) in cases {
            let got = holding.concerned(ns, "nightly", &labels, &annotations);
            assert_eq!(got, set(&want), "{what}");
        }
        assert_eq!(holding.len(), 3);
        holding.unmark("a", "acme");
        holding.unmark("b", "acme");
        assert_eq!(
            holding.concerned("a", "n", &labels("acme"), &none),
            set(&[])
        );
        assert_eq!(holding.len(), 1);
        holding.unmark("a", "beta");
        assert!(holding.is_empty());
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
