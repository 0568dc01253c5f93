//! Notifications against the real control plane, the Salesforce simulator, a webhook receiver
//! on loopback and a real SMTP server (aiosmtpd, STARTTLS with a test CA, AUTH required).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "notify/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::operator::Operator;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use sforg_operator::crd::{
    DeliveryState, NoticeKind, NotificationRecord, SalesforceOrg, TokenState,
};
use sforg_operator::metrics::Metrics;
use sforg_operator::notify::{self, Notifier, config};
use sforg_simulator::UserSpec;
use support::{Received, Receiver, Smtp, indent};

const WAIT: Duration = Duration::from_secs(60);
/// Revokes every token of the demo user at Salesforce and asks for a check of `names`: they
/// expire.
async fn revoke_and_check(op: &Operator, names: &[&str]) {
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    for name in names {
        op.request_check(name).await;
    }
}

const CHANNELS_SECRET: &str = "sforg-notification-channels";

fn settings() -> notify::Settings {
    notify::Settings {
        recipient_domains: vec!["acme.example".into()],
        attempts: 3,
        retry_first: Duration::from_millis(200),
        ..notify::Settings::default()
    }
}

async fn put_channels(op: &Operator, yaml: &str) {
    let api: Api<Secret> = op.secrets();
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": CHANNELS_SECRET},
        "stringData": {config::CHANNELS_KEY: yaml},
    }))
    .unwrap();
    if api.get_opt(CHANNELS_SECRET).await.unwrap().is_some() {
        api.replace(CHANNELS_SECRET, &PostParams::default(), &body)
            .await
            .unwrap();
    } else {
        api.create(&PostParams::default(), &body).await.unwrap();
    }
}

/// An operator with re-auth links and notifications on the channels in `yaml` (a Secret in
/// the test namespace, watched like in production).
async fn operator(
    prefix: &str,
    yaml: &str,
    settings: notify::Settings,
) -> (Operator, Arc<Metrics>) {
    let mut op = Operator::start_with_reauth(prefix).await;
    op.kill_controller().await;
    put_channels(&op, yaml).await;
    let store = config::Store::default();
    let metrics = Metrics::new();
    tokio::spawn(config::watch(
        op.secrets(),
        CHANNELS_SECRET.into(),
        store.clone(),
        Some(metrics.clone()),
    ));
    let first = config::parse(yaml).unwrap();
    let names: Vec<String> = first.0.keys().cloned().collect();
    eventually("the channels to load", WAIT, || {
        let store = store.clone();
        let names = names.clone();
        async move { names.iter().all(|n| store.get(n).is_some()).then_some(()) }
    })
    .await;
    op.notify = Some(Notifier::new(settings, store));
    op.metrics = Some(metrics.clone());
    op.start_controller();
    (op, metrics)
}

/// A Valid web org `name` notifying `channels` and `recipients`.
async fn valid_org(op: &Operator, name: &str, channels: &[&str], recipients: &[&str]) {
    op.ensure_app_secret().await;
    let mut spec = op.web_org(name).json();
    spec["notifications"] = json!({"channels": channels, "recipients": recipients});
    op.create_org(name, spec).await;
    op.seed_tokens(&format!("{name}-token"), name).await;
    op.wait_state(name, TokenState::Valid, None).await;
}

async fn records(op: &Operator, name: &str) -> Vec<NotificationRecord> {
    let org: SalesforceOrg = op.orgs().get(name).await.unwrap();
    org.status.unwrap_or_default().notifications
}

/// Waits until every record of `name` of `kind` is settled (Sent or Failed); returns them by
/// channel.
async fn settled(
    op: &Operator,
    name: &str,
    kind: NoticeKind,
    channels: usize,
) -> BTreeMap<String, NotificationRecord> {
    eventually(
        &format!("{name}'s {kind:?} notifications to settle"),
        WAIT,
        || async move {
            let rs: Vec<_> = records(op, name)
                .await
                .into_iter()
                .filter(|r| r.kind == kind)
                .collect();
            (rs.len() == channels && rs.iter().all(|r| r.state != DeliveryState::Pending))
                .then(|| rs.into_iter().map(|r| (r.channel.clone(), r)).collect())
        },
    )
    .await
}

/// Quoted-printable soft breaks and escapes undone, enough to find a URL in a mail.
fn unfold(data: &str) -> String {
    data.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

#[tokio::test]
async fn an_expired_org_is_told_once_by_webhook_slack_and_email_with_the_link() {
    let hooks = Receiver::start().await;
    let smtp = Smtp::start().await;
    let yaml = format!(
        "hook:\n  kind: webhook\n  url: {url}/ok/hook\n  headers: {{X-Api-Key: k3y}}\n\
         chat:\n  kind: webhook\n  format: slack\n  url: {url}/ok/chat\n\
         mail:\n  kind: email\n  host: localhost\n  port: {port}\n  tls: starttls\n  username: {user}\n  password: {pw}\n  from: sforg@ops.example\n  ca: |\n{ca}\n",
        url = hooks.url,
        port = smtp.port,
        user = smtp.user,
        pw = smtp.password,
        ca = indent(&smtp.ca_pem),
    );
    let (mut op, metrics) = operator("notify-basic", &yaml, settings()).await;
    valid_org(
        &op,
        "acme",
        &["hook", "chat", "mail"],
        &["admin@acme.example", "intruder@evil.example"],
    )
    .await;
    let tokens = op.secret_data("acme-token").await;

    // The recipient outside the allowed domains shows on the org.
    let org = op.orgs().get("acme").await.unwrap();
    assert_eq!(
        org.status.unwrap().refused_recipients,
        ["intruder@evil.example"]
    );
    let events = op.events_for("acme").await;
    assert!(events.iter().any(|e| {
        e.reason.as_deref() == Some("NotificationRecipientsRefused")
            && e.note
                .as_deref()
                .unwrap_or_default()
                .contains("intruder@evil.example")
    }));
    assert!(
        records(&op, "acme").await.is_empty(),
        "nothing is due while valid"
    );

    revoke_and_check(&op, &["acme"]).await;
    op.wait_state("acme", TokenState::Expired, None).await;
    let sent = settled(&op, "acme", NoticeKind::Expired, 3).await;
    assert!(
        sent.values().all(|r| r.state == DeliveryState::Sent),
        "{sent:#?}"
    );
    let key = sent["hook"].key.clone();
    assert!(
        sent.values().all(|r| r.key == key),
        "one idempotency key on every channel"
    );

    let hook = hooks.delivered_on("ok/hook");
    assert_eq!(hook.len(), 1);
    let body = &hook[0].body;
    assert_eq!(hook[0].key, key);
    assert_eq!(body["apiVersion"], notify::payload::API_VERSION);
    assert_eq!(body["event"], "Expired");
    assert_eq!(body["idempotencyKey"], key.as_str());
    assert_eq!(body["name"], "acme");
    assert_eq!(body["namespace"], op.ns.as_str());
    assert_eq!(body["state"], "Expired");
    assert!(body["orgId"].as_str().is_some_and(|o| o.starts_with("00D")));
    assert!(body["reason"].is_string() && body["message"].is_string());
    let link = body["reauthUrl"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&op.reauth.as_ref().unwrap().public_url),
        "{link}"
    );
    let chat = hooks.delivered_on("ok/chat");
    assert_eq!(chat.len(), 1);
    assert!(chat[0].body["text"].as_str().unwrap().contains(&link));

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.tls && mail.auth, "STARTTLS and AUTH were used");
    assert_eq!(
        mail.rcpt_tos,
        ["admin@acme.example"],
        "nothing to the refused recipient"
    );
    let data = unfold(&mail.data);
    assert!(data.contains(&format!("Message-ID: <{key}@")), "{data}");
    assert!(
        data.contains(&format!("href=\"{link}\"")),
        "the link is a button"
    );
    assert!(data.contains("text/plain") && data.contains("text/html"));

    // No token or secret in any notification.
    let everything = format!("{hook:?}{chat:?}{data}");
    for secret in [tokens.get("access_token"), tokens.get("refresh_token")]
        .into_iter()
        .flatten()
    {
        assert!(!everything.contains(secret.as_str()));
    }
    assert!(!everything.contains("k3y"));

    // The link in the message works: it opens the re-auth page.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&link)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success() || response.status().is_redirection(),
        "{}",
        response.status()
    );

    let text = metrics.encode().unwrap();
    assert!(
        text.contains("sforg_notifications_total{channel=\"mail\",outcome=\"sent\"} 1"),
        "{text}"
    );
    assert!(text.contains("sforg_notification_config_valid 1"));

    // A restart decides again and finds everything recorded: nothing is sent twice.
    let reconciles = || {
        let text = metrics.encode().unwrap();
        text.lines()
            .find(|l| l.starts_with("sforg_reconcile_total{result=\"success\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = reconciles();
    op.kill_controller().await;
    op.start_controller();
    // One reconcile at start, then one for a check request made after it (made before it, the
    // two could be one).
    eventually("a reconcile after the restart", WAIT, || async {
        (reconciles() > before).then_some(())
    })
    .await;
    let started = reconciles();
    op.request_check("acme").await;
    eventually("the requested check", WAIT, || async {
        (reconciles() > started).then_some(())
    })
    .await;
    assert_eq!(hooks.received().len(), 2, "one request per webhook, ever");
    assert_eq!(smtp.mails().len(), 1);

    // Valid again: one Recovered per channel, without the link; the expiry records go.
    op.store_new_tokens("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    let recovered = settled(&op, "acme", NoticeKind::Recovered, 3).await;
    assert!(recovered.values().all(|r| r.state == DeliveryState::Sent));
    let hook = hooks.delivered_on("ok/hook");
    assert_eq!(hook.len(), 2);
    assert_eq!(hook[1].body["event"], "Recovered");
    assert!(hook[1].body["reauthUrl"].is_null());
    eventually("the expiry records to go", WAIT, || async {
        records(&op, "acme")
            .await
            .iter()
            .all(|r| r.kind == NoticeKind::Recovered)
            .then_some(())
    })
    .await;
    assert_eq!(smtp.mails().len(), 2);
}

#[tokio::test]
async fn failing_webhooks_lose_nothing_and_touch_nothing_else() {
    let hooks = Receiver::start().await;
    let pki = support::Pki::new(&["wrong.example"]);
    let tls = support::tls_name_mismatch(&pki).await;
    let yaml = format!(
        "good:\n  kind: webhook\n  url: {url}/ok/good\n\
         flaky:\n  kind: webhook\n  url: {url}/flaky/x\n\
         slow:\n  kind: webhook\n  url: {url}/slow/x\n  timeout: 1s\n\
         down:\n  kind: webhook\n  url: http://127.0.0.1:9/unreachable\n\
         tls:\n  kind: webhook\n  url: {tls}\n  ca: |\n{ca}\n",
        url = hooks.url,
        ca = indent(&pki.ca_pem),
    );
    let (op, metrics) = operator("notify-webhook", &yaml, settings()).await;
    op.create_cronjob("backup", &[("orgtokens.dev/org", "acme")], false)
        .await;
    op.ensure_app_secret().await;
    let mut spec = op.web_org("acme").json();
    spec["notifications"] = json!({"channels": ["good", "flaky", "slow", "down", "tls"]});
    spec["dependents"] = json!({"cronJobNames": ["backup"]});
    op.create_org("acme", spec).await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    revoke_and_check(&op, &["acme"]).await;
    op.wait_state("acme", TokenState::Expired, None).await;
    let got = settled(&op, "acme", NoticeKind::Expired, 5).await;
    for ch in ["good", "flaky", "slow"] {
        assert_eq!(got[ch].state, DeliveryState::Sent, "{ch}: {:?}", got[ch]);
    }
    assert_eq!(got["flaky"].attempts, 2, "a 500, then delivered on retry");
    assert_eq!(
        got["slow"].attempts, 2,
        "a timeout, then delivered on retry"
    );
    let key = &got["good"].key;
    for path in ["flaky/x", "slow/x"] {
        let seen: BTreeSet<String> = hooks
            .received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.key.clone())
            .collect();
        assert_eq!(
            seen,
            BTreeSet::from([key.clone()]),
            "{path}: retries repeat the key"
        );
    }
    assert_eq!(got["down"].state, DeliveryState::Failed);
    assert_eq!(got["down"].attempts, 3);
    assert!(
        got["down"]
            .error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{:?}",
        got["down"]
    );
    assert_eq!(got["tls"].state, DeliveryState::Failed);
    let tls_error = got["tls"].error.as_deref().unwrap();
    assert!(
        tls_error.to_lowercase().contains("certificate"),
        "{tls_error}"
    );

    // Warning Events name the failed channels; token state and CronJobs are untouched.
    let warnings: Vec<String> = op
        .events_for("acme")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("NotificationFailed"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        warnings.iter().any(|n| n.contains("channel down")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|n| n.contains("channel tls")),
        "{warnings:?}"
    );
    let org = op.orgs().get("acme").await.unwrap();
    assert_eq!(
        org.status.as_ref().unwrap().state,
        Some(TokenState::Expired)
    );
    assert!(op.cronjob_hold("backup").await.0, "the CronJob stays held");
    let text = metrics.encode().unwrap();
    for line in [
        "sforg_notifications_total{channel=\"flaky\",outcome=\"retried\"} 1",
        "sforg_notifications_total{channel=\"flaky\",outcome=\"sent\"} 1",
        "sforg_notifications_total{channel=\"down\",outcome=\"failed\"} 1",
        "sforg_notifications_total{channel=\"tls\",outcome=\"failed\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn smtp_faults_lose_nothing() {
    let smtp = Smtp::start().await;
    let mail = |name: &str, user: &str, pw: &str, from: &str| {
        format!(
            "{name}:\n  kind: email\n  host: localhost\n  port: {port}\n  tls: starttls\n  username: {user}\n  password: {pw}\n  from: {from}\n  timeout: 5s\n  ca: |\n{ca}\n",
            port = smtp.port,
            ca = indent(&smtp.ca_pem),
        )
    };
    let yaml = mail("mail", &smtp.user, &smtp.password, "sforg@ops.example")
        + &mail("badauth", &smtp.user, "wrong", "sforg@ops.example")
        + &mail("cut", &smtp.user, &smtp.password, "drop@ops.example");
    let (op, _) = operator("notify-smtp", &yaml, settings()).await;
    valid_org(
        &op,
        "acme",
        &["mail", "badauth", "cut"],
        &["admin@acme.example"],
    )
    .await;
    valid_org(&op, "bouncy", &["mail"], &["bounce@acme.example"]).await;

    revoke_and_check(&op, &["acme", "bouncy"]).await;
    let acme = settled(&op, "acme", NoticeKind::Expired, 3).await;
    assert_eq!(acme["mail"].state, DeliveryState::Sent);
    assert_eq!(acme["cut"].state, DeliveryState::Sent, "{:?}", acme["cut"]);
    assert_eq!(
        acme["cut"].attempts, 2,
        "cut mid-message, then delivered on retry"
    );
    assert_eq!(acme["badauth"].state, DeliveryState::Failed);
    assert_eq!(
        acme["badauth"].attempts, 1,
        "a refused login is not retried"
    );
    assert!(
        acme["badauth"].error.as_deref().unwrap().contains("535"),
        "{:?}",
        acme["badauth"]
    );
    let bouncy = settled(&op, "bouncy", NoticeKind::Expired, 1).await;
    assert_eq!(bouncy["mail"].state, DeliveryState::Failed);
    assert!(
        bouncy["mail"].error.as_deref().unwrap().contains("550"),
        "{:?}",
        bouncy["mail"]
    );

    let mails = smtp.mails();
    let from = |f: &str| mails.iter().filter(|m| m.mail_from == f).count();
    assert_eq!(
        from("sforg@ops.example"),
        1,
        "one mail to acme, none to the refused recipient"
    );
    assert_eq!(from("drop@ops.example"), 1);
    assert!(
        op.events_for("bouncy")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("NotificationFailed"))
    );
}

#[tokio::test]
async fn channel_changes_apply_without_restart_and_an_invalid_secret_keeps_the_last_good() {
    let hooks = Receiver::start().await;
    let (op, metrics) = operator(
        "notify-config",
        &format!("hook:\n  kind: webhook\n  url: {}/ok/first\n", hooks.url),
        settings(),
    )
    .await;
    valid_org(&op, "acme", &["hook"], &[]).await;
    put_channels(
        &op,
        &format!("hook:\n  kind: webhook\n  url: {}/ok/second\n", hooks.url),
    )
    .await;
    let notifier = op.notify.clone().unwrap();
    eventually("the new channel to apply", WAIT, || async {
        match notifier.channels().get("hook") {
            Some(config::Channel::Webhook(w)) if w.url.path() == "/ok/second" => Some(()),
            _ => None,
        }
    })
    .await;
    put_channels(&op, "hook:\n  kind: webhook\n  format: json\n").await;
    eventually("the invalid Secret to be reported", WAIT, || async {
        metrics
            .encode()
            .unwrap()
            .contains("sforg_notification_config_valid 0")
            .then_some(())
    })
    .await;

    revoke_and_check(&op, &["acme"]).await;
    let got = settled(&op, "acme", NoticeKind::Expired, 1).await;
    assert_eq!(got["hook"].state, DeliveryState::Sent);
    assert_eq!(
        hooks.delivered_on("ok/second").len(),
        1,
        "the last good channels deliver"
    );
    assert!(hooks.delivered_on("ok/first").is_empty());
}

#[tokio::test]
async fn many_orgs_expiring_at_once_are_all_told_with_bounded_concurrency() {
    let hooks = Receiver::start().await;
    let yaml = format!("hook:\n  kind: webhook\n  url: {}/busy/x\n", hooks.url);
    let (op, _) = operator(
        "notify-many",
        &yaml,
        notify::Settings {
            concurrency: 3,
            default_channels: vec!["hook".into()],
            ..settings()
        },
    )
    .await;
    const ORGS: usize = 12;
    op.ensure_app_secret().await;
    let names: Vec<String> = (0..ORGS).map(|i| format!("org{i}")).collect();
    for name in &names {
        // One user per org: Salesforce keeps at most 5 grants per user and app.
        let user = format!("{name}@acme.example");
        op.sim
            .create_user(UserSpec::new(&op.demo.org.label, &user, "Test-Passw0rd!"))
            .unwrap();
        let t = op.sim.mint_tokens(&op.demo.app.client_id, &user).unwrap();
        let mut data = BTreeMap::new();
        data.insert("access_token".to_owned(), t.access_token.clone());
        data.insert("refresh_token".to_owned(), t.refresh_token.clone().unwrap());
        data.insert("instance_url".to_owned(), t.instance_url.clone());
        data.insert("issued_at".to_owned(), t.issued_at.clone());
        op.put_secret(&format!("{name}-token"), name, data).await;
        // No spec.notifications: the administrator's default channel.
        op.create_org(name, op.web_org(name).json()).await;
    }
    for name in &names {
        op.wait_state(name, TokenState::Valid, None).await;
    }
    for name in &names {
        op.sim
            .control()
            .revoke_user_tokens(&format!("{name}@acme.example"), None)
            .unwrap();
        op.request_check(name).await;
    }
    eventually("every org to be told", Duration::from_secs(90), || async {
        (hooks.delivered().len() >= ORGS).then_some(())
    })
    .await;
    let keys: BTreeSet<String> = hooks.delivered().into_iter().map(|r| r.key).collect();
    assert_eq!(keys.len(), ORGS);
    assert_eq!(hooks.delivered().len(), ORGS, "none twice");
    assert!(
        hooks.max_in_flight() <= 3,
        "at most 3 at once, saw {}",
        hooks.max_in_flight()
    );
    for i in 0..ORGS {
        let r = settled(&op, &format!("org{i}"), NoticeKind::Expired, 1).await;
        assert_eq!(r["hook"].state, DeliveryState::Sent);
    }
}

/// A delivery cut short by the controller's end is delivered by the next one with the same
/// key (in-process here; across SIGKILL of the binary and a leader handover below).
#[tokio::test]
async fn a_delivery_cut_by_a_stop_is_redelivered_with_the_same_key() {
    let hooks = Receiver::start().await;
    let yaml = format!(
        "hook:\n  kind: webhook\n  url: {}/hang/x\n  timeout: 120s\n",
        hooks.url
    );
    let (mut op, _) = operator("notify-stop", &yaml, settings()).await;
    valid_org(&op, "acme", &["hook"], &[]).await;
    revoke_and_check(&op, &["acme"]).await;
    eventually("the request to arrive", WAIT, || async {
        (!hooks.received().is_empty()).then_some(())
    })
    .await;
    op.kill_controller().await;
    assert_eq!(records(&op, "acme").await[0].state, DeliveryState::Pending);
    hooks.release();
    op.start_controller();
    let got = settled(&op, "acme", NoticeKind::Expired, 1).await;
    assert_eq!(got["hook"].state, DeliveryState::Sent);
    let keys: BTreeSet<String> = hooks.received().into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys.len(),
        1,
        "the same key both times: a receiver drops the repeat"
    );
}

/// Starts the operator binary (as a Deployment would, without leader election) with
/// notifications on the channels Secret of `op`'s namespace.
fn spawn_binary(op: &Operator, ca: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let binary = std::env::var("SFORG_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sforg-operator").to_owned());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(binary)
        .args(["run", "--namespace", &op.ns, "--no-leader-election"])
        .args(["--salesforce-proxy", op.sim.proxy_url()])
        .arg("--extra-ca-file")
        .arg(ca)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args([
            "--notification-channels-secret",
            &format!("{}/{CHANNELS_SECRET}", op.ns),
        ])
        .args(["--notification-default-channels", "hook"])
        .args(["--notification-retry-backoff", "200ms"])
        .env("KUBECONFIG", common::kubeconfig_path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the operator")
}

#[tokio::test]
async fn sigkill_between_deciding_and_sending_loses_nothing() {
    let hooks = Receiver::start().await;
    let op = Operator::prepare("notify-kill").await;
    put_channels(
        &op,
        &format!(
            "hook:\n  kind: webhook\n  url: {}/hang/x\n  timeout: 120s\n",
            hooks.url
        ),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("sforg-notify-kill-{}", op.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("sim-ca.pem");
    std::fs::write(&ca, op.sim.ca_pem()).unwrap();
    let log = dir.join("operator.log");
    let mut first = spawn_binary(&op, &ca, &log);
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    revoke_and_check(&op, &["acme"]).await;
    eventually("the notification to be on its way", WAIT, || async {
        (!hooks.received().is_empty()).then_some(())
    })
    .await;
    // Decided and recorded, not yet answered: SIGKILL.
    first.kill().unwrap();
    first.wait().unwrap();
    let pending = records(&op, "acme").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, DeliveryState::Pending);

    hooks.release();
    let mut second = spawn_binary(&op, &ca, &log);
    let got = settled(&op, "acme", NoticeKind::Expired, 1).await;
    let _ = second.kill();
    let _ = second.wait();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got["hook"].state, DeliveryState::Sent, "{logs}");
    let keys: BTreeSet<String> = hooks.received().into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        BTreeSet::from([got["hook"].key.clone()]),
        "redelivered with the same key"
    );
    assert_eq!(
        hooks.received().len(),
        2,
        "once per process, never decided twice"
    );
}

#[tokio::test]
async fn a_leader_handover_delivers_what_the_old_leader_left_pending() {
    use common::replica::Replica;
    use sforg_operator::salesforce::HttpSalesforce;
    let hooks = Receiver::start().await;
    let op = Operator::prepare("notify-leader").await;
    let yaml = format!(
        "hook:\n  kind: webhook\n  url: {}/hang/x\n  timeout: 120s\n",
        hooks.url
    );
    put_channels(&op, &yaml).await;
    let store = config::Store::with(config::parse(&yaml).unwrap());
    let replica = |id: &str| {
        let settings = sforg_operator::reconcile::Settings {
            notify: Some(Notifier::new(
                notify::Settings {
                    default_channels: vec!["hook".into()],
                    ..settings()
                },
                store.clone(),
            )),
            ..Default::default()
        };
        let salesforce = HttpSalesforce::new(common::operator::http_settings(&op.sim)).unwrap();
        Replica::start_with(&op, "notify-lease", id, salesforce, settings)
    };
    let mut a = replica("replica-a");
    eventually("a to lead", WAIT, || async { a.leads().then_some(()) }).await;
    let b = replica("replica-b");
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    revoke_and_check(&op, &["acme"]).await;
    eventually("the notification to be on its way", WAIT, || async {
        (!hooks.received().is_empty()).then_some(())
    })
    .await;
    a.crash().await;
    assert_eq!(records(&op, "acme").await[0].state, DeliveryState::Pending);
    hooks.release();
    let got = settled(&op, "acme", NoticeKind::Expired, 1).await;
    assert!(b.leads());
    assert_eq!(got["hook"].state, DeliveryState::Sent);
    let keys: BTreeSet<String> = hooks.received().into_iter().map(|r| r.key).collect();
    assert_eq!(keys.len(), 1, "the new leader delivers with the same key");
}

#[tokio::test]
async fn an_expiring_authorization_is_told_at_each_lead_time_with_a_link() {
    use kube::api::{Patch, PatchParams};
    use sforg_operator::crd::RefreshTokenPolicyType;
    use sforg_operator::reauth_record::AUTHORIZED_AT_ANNOTATION;
    let hooks = Receiver::start().await;
    let yaml = format!("hook:\n  kind: webhook\n  url: {}/ok/expiry\n", hooks.url);
    let (mut op, _) = operator("notify-expiring", &yaml, settings()).await;
    op.kill_controller().await;
    op.expiry_lead_times = vec![Duration::from_secs(30), Duration::from_secs(15)];
    op.start_controller();
    op.ensure_app_secret().await;
    let mut spec = op
        .web_org("acme")
        .refresh_token_policy(RefreshTokenPolicyType::ExpireAfter, Some("40s"))
        .json();
    spec["notifications"] = json!({"channels": ["hook"]});
    op.create_org("acme", spec).await;
    op.seed_tokens("acme-token", "acme").await;
    // Tokens brought in by hand, with the time of their login set by the person.
    let authorized = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {AUTHORIZED_AT_ANNOTATION: authorized}}});
    op.secrets()
        .patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    // The 30 s stage, then the 15 s one: one message each, with the re-auth link.
    let told = eventually("two ExpiringSoon messages", WAIT, || async {
        let told: Vec<Received> = hooks
            .delivered_on("ok/expiry")
            .into_iter()
            .filter(|r| r.body["event"] == "ExpiringSoon")
            .collect();
        (told.len() >= 2).then_some(told)
    })
    .await;
    assert_eq!(told.len(), 2, "one message per lead time");
    assert_ne!(told[0].key, told[1].key);
    for r in &told {
        let url = r.body["reauthUrl"].as_str().unwrap_or_default();
        assert!(url.contains("/reauth/"), "a link to act from: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
