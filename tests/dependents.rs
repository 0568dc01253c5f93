//! Dependent CronJobs on the real control plane: suspended while their org is Expired,
//! resumed exactly when no org holds them, never touching a person's own suspension.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::eventually;
use common::operator::{CONVERGE, Operator};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use sforg_operator::crd::TokenState;
use sforg_operator::dependents::HOLDERS_ANNOTATION;
use sforg_operator::reconcile::FINALIZER;

async fn wait_suspended(op: &Operator, name: &str, want: bool) {
    op.wait_suspended(name, want).await;
}

/// A web org selecting CronJobs labelled `backup-of=<name>` (or `both`), connected.
async fn org_with_dependents(op: &Operator, name: &str) {
    op.create_web_org_with(
        name,
        json!({"cronJobSelector": {"matchExpressions": [
            {"key": "backup-of", "operator": "In", "values": [name, "both"]}]}}),
    )
    .await;
    op.seed_tokens(&format!("{name}-token"), name).await;
    op.wait_state(name, TokenState::Valid, None).await;
}

async fn expire(op: &Operator, names: &[&str]) {
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    for name in names {
        op.request_check(name).await;
    }
    for name in names {
        op.wait_state(name, TokenState::Expired, None).await;
    }
}

#[tokio::test]
async fn suspends_on_expiry_and_resumes_exactly_those_on_recovery() {
    let op = Operator::start("deps").await;
    op.create_cronjob("nightly", &[("backup-of", "acme")], false)
        .await;
    op.create_cronjob("weekly", &[("backup-of", "acme")], false)
        .await;
    op.create_cronjob("paused-by-person", &[("backup-of", "acme")], true)
        .await;
    op.create_cronjob("unrelated", &[("backup-of", "other")], false)
        .await;
    org_with_dependents(&op, "acme").await;

    expire(&op, &["acme"]).await;
    let org = eventually("status to list the held CronJobs", CONVERGE, || async {
        let org = op.orgs().get("acme").await.ok()?;
        (org.status.as_ref()?.suspended_cron_jobs.len() == 2).then_some(org)
    })
    .await;
    assert_eq!(
        org.status.map(|s| s.suspended_cron_jobs),
        Some(vec!["nightly".into(), "weekly".into()])
    );
    assert_eq!(
        op.cronjob_hold("nightly").await,
        (true, Some("acme".into()))
    );
    assert_eq!(op.cronjob_hold("weekly").await, (true, Some("acme".into())));
    assert_eq!(op.cronjob_hold("paused-by-person").await, (true, None));
    assert_eq!(op.cronjob_hold("unrelated").await, (false, None));
    let events = op.events_for("acme").await;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("CronJobsSuspended"))
        .and_then(|e| e.note.clone())
        .expect("a CronJobsSuspended event");
    assert!(
        note.contains("nightly") && note.contains("weekly"),
        "{note}"
    );

    op.store_new_tokens("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    wait_suspended(&op, "nightly", false).await;
    wait_suspended(&op, "weekly", false).await;
    assert_eq!(op.cronjob_hold("nightly").await, (false, None));
    assert_eq!(
        op.cronjob_hold("paused-by-person").await,
        (true, None),
        "a person's pause stays"
    );
    let org = eventually("status to hold nothing", CONVERGE, || async {
        let org = op.orgs().get("acme").await.ok()?;
        org.status
            .as_ref()?
            .suspended_cron_jobs
            .is_empty()
            .then_some(org)
    })
    .await;
    assert_eq!(org.status.and_then(|s| s.state), Some(TokenState::Valid));
    let events = op.events_for("acme").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CronJobsResumed"))
    );
}

#[tokio::test]
async fn a_cronjob_shared_by_two_orgs_resumes_when_both_are_valid() {
    let op = Operator::start("shared").await;
    op.create_cronjob("shared", &[("backup-of", "both")], false)
        .await;
    org_with_dependents(&op, "alpha").await;
    org_with_dependents(&op, "beta").await;
    expire(&op, &["alpha", "beta"]).await;
    eventually("both orgs to hold it", CONVERGE, || async {
        (op.cronjob_hold("shared").await == (true, Some("alpha,beta".into()))).then_some(())
    })
    .await;

    op.store_new_tokens("alpha").await;
    op.wait_state("alpha", TokenState::Valid, None).await;
    eventually("alpha to let go", CONVERGE, || async {
        (op.cronjob_hold("shared").await == (true, Some("beta".into()))).then_some(())
    })
    .await;

    op.store_new_tokens("beta").await;
    op.wait_state("beta", TokenState::Valid, None).await;
    wait_suspended(&op, "shared", false).await;
    assert_eq!(op.cronjob_hold("shared").await, (false, None));
}

#[tokio::test]
async fn cronjobs_created_or_relabelled_while_expired() {
    let op = Operator::start("relabel").await;
    op.create_cronjob("first", &[("backup-of", "acme")], false)
        .await;
    org_with_dependents(&op, "acme").await;
    expire(&op, &["acme"]).await;
    wait_suspended(&op, "first", true).await;

    op.create_cronjob("late", &[("backup-of", "acme")], false)
        .await;
    wait_suspended(&op, "late", true).await;

    // Relabelled into the selector (the CronJob watch brings the change; nothing lists on a
    // timer any more).
    op.create_cronjob("moved", &[("backup-of", "other")], false)
        .await;
    op.create_cronjob("paused-by-person", &[("backup-of", "acme")], true)
        .await;
    let relabel = |to: &str| json!({"metadata": {"labels": {"backup-of": to}}});
    op.cronjobs()
        .patch(
            "moved",
            &PatchParams::default(),
            &Patch::Merge(&relabel("acme")),
        )
        .await
        .expect("relabel in");
    wait_suspended(&op, "moved", true).await;
    assert_eq!(op.cronjob_hold("moved").await, (true, Some("acme".into())));

    // Relabelled out of the selector: released and resumed; a person's suspension stays.
    for name in ["first", "paused-by-person"] {
        op.cronjobs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&relabel("other")),
            )
            .await
            .expect("relabel out");
    }
    wait_suspended(&op, "first", false).await;
    assert_eq!(op.cronjob_hold("first").await, (false, None));
    assert_eq!(op.cronjob_hold("late").await, (true, Some("acme".into())));
    assert_eq!(op.cronjob_hold("moved").await, (true, Some("acme".into())));
    assert_eq!(op.cronjob_hold("paused-by-person").await, (true, None));
}

#[tokio::test]
async fn deleting_an_expired_org_releases_its_cronjobs() {
    let op = Operator::start("delete").await;
    op.create_cronjob("nightly", &[("backup-of", "acme")], false)
        .await;
    org_with_dependents(&op, "acme").await;
    // A Valid org holds nothing, so nothing needs to run before it goes: no finalizer.
    let finalizers = || async {
        op.orgs()
            .get("acme")
            .await
            .expect("org")
            .finalizers()
            .to_vec()
    };
    assert!(finalizers().await.is_empty());
    expire(&op, &["acme"]).await;
    wait_suspended(&op, "nightly", true).await;
    // Given just before its first hold, so its deletion releases what it holds.
    assert_eq!(finalizers().await, [FINALIZER]);

    op.orgs()
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_suspended(&op, "nightly", false).await;
    assert_eq!(op.cronjob_hold("nightly").await, (false, None));
    eventually("the org to be gone", CONVERGE, || async {
        op.orgs()
            .get_opt("acme")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn restart_halfway_through_converges() {
    let mut op = Operator::start("restart").await;
    let names: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    for n in &names {
        op.create_cronjob(n, &[("backup-of", "acme")], false).await;
    }
    org_with_dependents(&op, "acme").await;
    op.kill_controller().await;
    // What a process killed mid-suspend leaves: some jobs held, the rest running, no status.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    for n in &names[..2] {
        let patch = json!({"metadata": {"annotations": {HOLDERS_ANNOTATION: "acme"}}, "spec": {"suspend": true}});
        op.cronjobs()
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
    }
    // No check is asked for: the holds the status does not record make the restarted
    // operator check acme at once rather than at its slot.
    op.start_controller();
    op.wait_state("acme", TokenState::Expired, None).await;
    for n in &names {
        wait_suspended(&op, n, true).await;
    }
    // Killed again mid-resume: half resumed and released already.
    op.kill_controller().await;
    op.store_new_tokens("acme").await;
    for n in &names[..3] {
        let patch = json!({"metadata": {"annotations": {HOLDERS_ANNOTATION: null}}, "spec": {"suspend": false}});
        op.cronjobs()
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
    }
    op.start_controller();
    op.wait_state("acme", TokenState::Valid, None).await;
    for n in &names {
        wait_suspended(&op, n, false).await;
        assert_eq!(op.cronjob_hold(n).await, (false, None), "{n}");
    }
}

#[tokio::test]
async fn another_writer_resuming_a_held_cronjob_is_not_fought_in_a_loop() {
    let op = Operator::start("fight").await;
    op.create_cronjob("nightly", &[("backup-of", "acme")], false)
        .await;
    org_with_dependents(&op, "acme").await;
    expire(&op, &["acme"]).await;
    wait_suspended(&op, "nightly", true).await;

    let resume = json!({"spec": {"suspend": false}});
    let gitops = PatchParams::apply("gitops-tool");
    // First override: re-asserted once (at the next look, within the holding recheck).
    op.cronjobs()
        .patch("nightly", &gitops, &Patch::Merge(&resume))
        .await
        .expect("resume");
    wait_suspended(&op, "nightly", true).await;
    eventually("a Warning about the override", CONVERGE, || async {
        let events = op.events_for("acme").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CronJobsResumedByAnotherWriter"))
            .then_some(())
    })
    .await;

    // Second override: within the backoff the operator does not write the CronJob at all,
    // however often it looks.
    let after = op
        .cronjobs()
        .patch("nightly", &gitops, &Patch::Merge(&resume))
        .await
        .expect("resume");
    for _ in 0..4 {
        op.request_check("acme").await;
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    let now = op.cronjobs().get("nightly").await.expect("get");
    assert_eq!(
        now.metadata.resource_version, after.metadata.resource_version,
        "no write loop"
    );
    assert_eq!(
        op.cronjob_hold("nightly").await,
        (false, Some("acme".into())),
        "still held, not fought"
    );
    let org = eventually("the override to be reported", CONVERGE, || async {
        let org = op.orgs().get("acme").await.ok()?;
        let c = org
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "DependentsSuspended")?
            .clone();
        (c.reason == "ResumedByAnotherWriter").then_some(c)
    })
    .await;
    assert!(org.message.contains("nightly"), "{}", org.message);

    // Recovery releases it and clears the report.
    op.store_new_tokens("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    eventually("the hold to be released", CONVERGE, || async {
        (op.cronjob_hold("nightly").await == (false, None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cronjobs_named_in_the_spec_are_held_among_many_others() {
    let op = Operator::start("named").await;
    // Unselected CronJobs beyond one page of the operator's metadata scan.
    for i in 0..510 {
        op.create_cronjob(&format!("other-{i:03}"), &[("team", "x")], false)
            .await;
    }
    op.create_cronjob("named", &[("team", "x")], false).await;
    op.create_web_org_with("acme", json!({"cronJobNames": ["named", "named-later"]}))
        .await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    expire(&op, &["acme"]).await;
    wait_suspended(&op, "named", true).await;
    assert_eq!(op.cronjob_hold("named").await, (true, Some("acme".into())));
    // Created later under a name the spec lists: the CronJob watch brings it.
    op.create_cronjob("named-later", &[], false).await;
    wait_suspended(&op, "named-later", true).await;
    for i in [0, 255, 509] {
        assert_eq!(
            op.cronjob_hold(&format!("other-{i:03}")).await,
            (false, None)
        );
    }
    op.store_new_tokens("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    wait_suspended(&op, "named", false).await;
    wait_suspended(&op, "named-later", false).await;
}
