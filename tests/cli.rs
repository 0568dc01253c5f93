//! The built binary's people-facing subcommands against the real control plane, through
//! KUBECONFIG as kubectl users run them: `status`, `check`, `reauth` and their `--help`.

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
    for sub in ["run", "crd", "status", "reauth", "check", "dashboard"] {
        let out = sforg(&[sub, "--help"]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{sub}: {stderr}");
        assert!(
            stdout.contains("Example"),
            "{sub} --help has no examples:\n{stdout}"
        );
    }
    let (stdout, _) = text(&sforg(&["--help"]).await);
    for sub in ["status", "reauth", "check", "dashboard"] {
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
