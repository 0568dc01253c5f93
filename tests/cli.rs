//! The built binary's people-facing subcommands against the real control plane, through
//! KUBECONFIG as kubectl users run them: `status`, `check`, `reauth`, `check-setup` (against
//! the Salesforce simulator) and their `--help`.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::eventually;
use common::operator::{CONVERGE, Operator};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sforg_operator::crd::TokenState;
use sforg_operator::reconcile::CHECK_ANNOTATION;
use sforg_simulator::{AppKind, DEMO_PERMISSION_SET, JwtKeyPair, PermittedUsers};

/// Runs the binary with the test control plane's kubeconfig (off the async runtime, so the
/// in-process operator keeps working meanwhile).
async fn sforg(args: &[&str]) -> Output {
    let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sforg-operator"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAMESPACE")
            .output()
            .expect("run sforg-operator")
    })
    .await
    .expect("join")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_and_reauth_from_the_command_line() {
    let (op, _) = Operator::with_valid_org("cli", false).await;
    let ns = op.ns.clone();
    // A second org that a person must re-authorize.
    op.create_web_org("gone").await;
    let seeded = op.seed_tokens("gone-token", "gone").await;
    op.wait_state("gone", TokenState::Valid, None).await;
    op.sim
        .control()
        .revoke_refresh_token(seeded.refresh_token.as_deref().expect("refresh token"))
        .expect("revoke");
    op.expire_sessions_and_check("gone").await;
    op.wait_state("gone", TokenState::Expired, None).await;

    // status: one row per org, in a table.
    let out = sforg(&["status", "-n", &ns]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "TOKEN", "ORG", "ID", "USERNAME", "HELD", "REASON", "LINK"
        ]
    );
    let acme: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(acme[0], "acme");
    assert_eq!(acme[1], "Valid");
    assert!(acme[2].starts_with("00D"), "{stdout}");
    assert_eq!(acme[3], op.demo.user.username);
    assert_eq!(&acme[4..], ["0", "TokenValid", "-"]);
    let gone: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&gone[..2], ["gone", "Expired"]);
    assert_eq!(gone[5], "RefreshTokenRevoked", "{stdout}");
    println!("{stdout}");

    // -A adds the namespace column.
    let out = sforg(&["status", "-A"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("NAMESPACE"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq([ns.as_str(), "acme", "Valid"])),
        "{stdout}"
    );

    // check: sets the annotation to the current time.
    let before = Timestamp::now();
    let out = sforg(&["check", "acme", "-n", &ns]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("asked for a check"), "{stdout}");
    let org = op.orgs().get("acme").await.expect("org");
    let stamp: Timestamp = org.annotations()[CHECK_ANNOTATION]
        .parse()
        .expect("an RFC 3339 time");
    assert!(stamp >= before - Duration::from_secs(1), "{stamp}");
    // The operator answers a requested check with an Event.
    eventually("the Checked event", CONVERGE, || async {
        let events = op.events_for("acme").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Checked"))
            .then_some(())
    })
    .await;

    // check --wait: returns with the result even though a steady check writes no status
    // (the Event says it ran).
    let out = sforg(&["check", "acme", "-n", &ns, "--wait", "--timeout", "30s"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("is Valid (TokenValid)"), "{stdout}");

    // reauth: no callback server in this test, so no link, and the reason says why.
    let out = sforg(&["reauth", "gone", "-n", &ns]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("--public-url") && stderr.contains("RefreshTokenRevoked"),
        "{stderr}"
    );
    let out = sforg(&["reauth", "acme", "-n", &ns]).await;
    assert!(text(&out).1.contains("is Valid"), "{:?}", text(&out));

    // A missing org says how to find the right name.
    let out = sforg(&["check", "nope", "-n", &ns]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not found") && stderr.contains("status -A"),
        "{stderr}"
    );
}

#[tokio::test]
async fn every_subcommand_has_help_with_examples() {
    for sub in [
        "run",
        "crd",
        "status",
        "reauth",
        "check",
        "dashboard",
        "check-setup",
    ] {
        let out = sforg(&[sub, "--help"]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{sub}: {stderr}");
        assert!(
            stdout.contains("Example"),
            "{sub} --help has no examples:\n{stdout}"
        );
    }
    let (stdout, _) = text(&sforg(&["--help"]).await);
    for sub in ["status", "reauth", "check", "dashboard", "check-setup"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
    let (stdout, _) = text(&sforg(&["run", "--help"]).await);
    for flag in [
        "--metrics-listen",
        "--lease-name",
        "--lease-namespace",
        "--no-leader-election",
    ] {
        assert!(stdout.contains(flag), "{flag} missing:\n{stdout}");
    }
}

/// Installed as `kubectl-sforg` on the PATH, the binary is `kubectl sforg`: kubectl finds and
/// runs it, and its help names it so.
#[tokio::test]
async fn works_as_a_kubectl_plugin() {
    let dir = std::env::temp_dir().join(format!("sforg-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let plugin = dir.join("kubectl-sforg");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sforg-operator"), &plugin).expect("symlink");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let run = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("kubectl (scripts/control-plane.sh puts it on the PATH)")
    };
    let plugins = run(&["plugin", "list"]);
    let (stdout, _) = text(&plugins);
    assert!(stdout.contains("kubectl-sforg"), "{stdout}");
    let help = run(&["sforg", "--help"]);
    let (stdout, stderr) = text(&help);
    assert!(help.status.success(), "{stderr}");
    assert!(
        stdout.contains("Usage: kubectl sforg <COMMAND>"),
        "{stdout}"
    );
    for sub in ["status", "reauth", "check", "dashboard"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
    let sub = run(&["sforg", "dashboard", "--help"]);
    let (stdout, _) = text(&sub);
    assert!(
        stdout.contains("Usage: kubectl sforg dashboard"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run` refuses a bad `--allowed-login-domain` at start, before it contacts anything, with a
/// message that names the entry and says what to give instead.
#[test]
fn run_refuses_public_suffixes_and_malformed_domains() {
    let cases: &[(&[&str], &str)] = &[
        (&["--allowed-login-domain", "com"], "is a public suffix"),
        (&["--allowed-login-domain", "co.uk"], "is a public suffix"),
        (
            &[
                "--allowed-login-domain",
                "sso.acme.example",
                "--allowed-login-domain",
                "https://login.acme.example",
            ],
            "\"https://login.acme.example\" is not a domain name",
        ),
        (
            &["--allowed-login-domain", "*.acme.example"],
            "wildcards are not needed",
        ),
        (&["--allowed-login-port", "http"], "invalid value 'http'"),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sforg-operator"))
            .arg("run")
            .args(*args)
            // Nothing to connect to: the refusal must come first.
            .env("KUBECONFIG", "/nonexistent")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run sforg-operator");
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("Kubernetes API"), "{args:?}: {stderr}");
    }
}

/// Runs `check-setup` for `name` through the simulator's proxy; returns (exit ok, stdout).
async fn check_setup(op: &Operator, name: &str, extra: &[&str]) -> (bool, String) {
    let ca_file = std::env::temp_dir().join(format!("sforg-cli-ca-{}.pem", op.ns));
    std::fs::write(&ca_file, op.sim.ca_pem()).expect("write the simulator's CA");
    let ca = ca_file.to_string_lossy().into_owned();
    let mut args = vec![
        "check-setup",
        name,
        "-n",
        &op.ns,
        "--salesforce-proxy",
        op.sim.proxy_url(),
        "--extra-ca-file",
        &ca,
        "--salesforce-timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    let out = sforg(&args).await;
    let _ = std::fs::remove_file(&ca_file);
    let (stdout, stderr) = text(&out);
    println!("{stdout}{stderr}");
    if !out.status.success() {
        assert!(stderr.contains("thing(s) to change"), "{stderr}");
    }
    (out.status.success(), stdout)
}

/// The line of `item` in a checklist and the detail line under it.
fn item<'a>(checklist: &'a str, item: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = checklist.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(item))
        .unwrap_or_else(|| panic!("no {item:?} in:\n{checklist}"));
    (lines[i], lines.get(i + 1).copied().unwrap_or_default())
}

/// An External Client App set up for a PKCE-only web server org, with the refresh token
/// flow still requiring the secret: the checklist names that setting; cleared, all is well.
/// A wrong callback URL is named too. Nothing touches the org's own tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_setup_names_the_external_client_app_setting_to_change() {
    let op = Operator::start_kind("cli-setup-eca", AppKind::ExternalClientApp).await;
    let ctl = op.sim.control();
    let app = op.demo.app.client_id.clone();
    ctl.set_require_secret(&app, false, true).expect("settings");
    op.create_org(
        "acme",
        serde_json::json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": app}},
            "tokenSecretRef": {"name": "acme-token"},
        }),
    )
    .await;
    let seeded = op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    let public = ["--public-url", "http://localhost:8080"];

    let (ok, out) = check_setup(&op, "acme", &public).await;
    assert!(!ok, "{out}");
    let (line, _) = item(&out, "Consumer key, callback URL, scopes and PKCE");
    assert!(line.starts_with("[ok]"), "{out}");
    let (line, _) = item(&out, "Login completion");
    assert!(line.starts_with("[ok]"), "{out}");
    let (line, detail) = item(&out, "Refresh: client authentication");
    assert!(line.starts_with("[FAIL]"), "{out}");
    assert!(
        detail.contains("Require secret for Refresh Token Flow")
            && detail.contains("Settings > OAuth Settings > Security"),
        "{out}"
    );
    assert!(out.contains("1 thing(s) to change"), "{out}");

    ctl.set_require_secret(&app, false, false)
        .expect("settings");
    let (ok, out) = check_setup(&op, "acme", &public).await;
    assert!(ok, "{out}");
    assert!(out.contains("Nothing to change"), "{out}");
    let (line, detail) = item(&out, "Whose token it is");
    assert!(line.starts_with("[ok]"), "{out}");
    assert!(detail.contains(&op.demo.user.username), "{out}");

    // A callback URL the app does not have.
    let (ok, out) = check_setup(&op, "acme", &["--public-url", "https://sforg.example.com"]).await;
    assert!(!ok, "{out}");
    let (line, detail) = item(&out, "Consumer key, callback URL, scopes and PKCE");
    assert!(line.starts_with("[FAIL]"), "{out}");
    assert!(
        detail.contains("https://sforg.example.com/oauth/callback")
            && detail.contains("Settings > OAuth Settings > Callback URL"),
        "{out}"
    );

    // The org's own grant was never used: the seeded refresh token is still the only one.
    assert_eq!(
        ctl.valid_refresh_tokens(&op.demo.user.username, Some(&app))
            .expect("list"),
        vec![seeded.refresh_token.clone().expect("refresh token")]
    );
}

/// The headless flows, run once by the command against either kind of app: a JWT bearer
/// user outside the External Client App's permission sets, and a Connected App's client
/// credentials flow without a run-as user, each named with the policy to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_setup_runs_headless_flows_once_for_either_kind_of_app() {
    // External Client App, JWT bearer.
    let op = Operator::start_kind("cli-setup-jwt", AppKind::ExternalClientApp).await;
    let ctl = op.sim.control();
    let app = op.demo.app.client_id.clone();
    let key: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "jwt-key"},
        "stringData": {"tls.key": JwtKeyPair::test_key().private_key_pem},
    }))
    .expect("secret");
    op.secrets()
        .create(&Default::default(), &key)
        .await
        .expect("jwt secret");
    op.create_org(
        "jwt",
        serde_json::json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"jwtBearer": {"clientId": app, "username": op.demo.user.username,
                "privateKeyRef": {"name": "jwt-key", "key": "tls.key"}}},
            "tokenSecretRef": {"name": "jwt-token"},
        }),
    )
    .await;
    let (ok, out) = check_setup(&op, "jwt", &[]).await;
    assert!(ok, "{out}");
    let (line, detail) = item(&out, "Whose token it is");
    assert!(
        line.starts_with("[ok]") && detail.contains(&op.demo.org.id),
        "{out}"
    );

    ctl.set_permitted_users(&app, PermittedUsers::AdminApprovedPreAuthorized)
        .expect("policy");
    ctl.set_user_permission_set(&op.demo.user.username, DEMO_PERMISSION_SET, false)
        .expect("remove");
    let (ok, out) = check_setup(&op, "jwt", &[]).await;
    assert!(!ok, "{out}");
    let (line, detail) = item(&out, "JWT bearer grant");
    assert!(line.starts_with("[FAIL]"), "{out}");
    assert!(
        detail.contains("UserNotApproved") && detail.contains("Policies tab > OAuth Policies"),
        "{out}"
    );

    // Connected App, client credentials without a run-as user.
    let op = Operator::start_kind("cli-setup-cc", AppKind::ConnectedApp).await;
    let ctl = op.sim.control();
    ctl.set_run_as(&op.demo.app.client_id, None)
        .expect("no run-as");
    op.ensure_app_secret().await;
    op.create_org(
        "cc",
        serde_json::json!({
            "loginUrl": op.demo.org.instance_url,
            "auth": {"clientCredentials": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "cc-token"},
        }),
    )
    .await;
    let (ok, out) = check_setup(&op, "cc", &[]).await;
    assert!(!ok, "{out}");
    let (line, detail) = item(&out, "Client credentials grant");
    assert!(line.starts_with("[FAIL]"), "{out}");
    assert!(
        detail.contains("NoClientCredentialsUser") && detail.contains("Run As"),
        "{out}"
    );
}
