//! The Helm chart on the real control plane: `helm lint` passes, the apiserver accepts what
//! the chart renders (server-side dry run, both modes), its pod meets Pod Security
//! "restricted", the operator's CLI accepts the arguments it renders, and the operator runs a
//! whole expiry and recovery under exactly the chart's RBAC (a ServiceAccount token from the
//! TokenRequest API), which grants nothing beyond a fixed, reviewed list.
//!
//! helm and kubectl come from `SFORG_CONTROL_PLANE_BIN` (built by
//! `scripts/build-control-plane.sh`); like every integration test, these fail loudly without it.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::eventually;
use common::operator::{CONVERGE, Operator, http_settings};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sforg_operator::callback;
use sforg_operator::controller::{self, Scope};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::dependents::HOLDERS_ANNOTATION;
use sforg_operator::leader::{Elector, LeaseConfig, Stop};
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::HttpSalesforce;
use tokio::sync::oneshot;

// ---- running helm and kubectl --------------------------------------------------------------

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("SFORG_CONTROL_PLANE_BIN").unwrap_or_else(|_| {
        panic!(
            "SFORG_CONTROL_PLANE_BIN is not set: run the tests with scripts/test.sh, which builds \
             helm and kubectl with the control plane and points the tests at them"
        )
    });
    let path = PathBuf::from(dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-control-plane.sh",
        path.display()
    );
    path
}

fn chart_dir() -> String {
    format!("{}/charts/sforg-operator", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` with `stdin`; returns (success, stdout, stderr).
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(tool(program));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if program == "kubectl" {
        let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG")
            .expect("SFORG_TEST_KUBECONFIG is not set: run the tests with scripts/test.sh");
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes values to a fresh file for `helm -f`.
fn values_file(values: &Value) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "sforg-chart-values-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, values.to_string()).expect("write values");
    path
}

/// `helm template`; Err carries helm's message.
fn try_render(release: &str, namespace: &str, values: &Value) -> Result<Vec<Value>, String> {
    let file = values_file(values);
    let chart = chart_dir();
    let (ok, out, err) = run(
        "helm",
        &[
            "template",
            release,
            &chart,
            "--namespace",
            namespace,
            "-f",
            file.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let _ = std::fs::remove_file(&file);
    if !ok {
        return Err(err);
    }
    let mut docs = Vec::new();
    for chunk in out.split("\n---") {
        let meaningful = chunk
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            let doc: Value = serde_saphyr::from_str(chunk)
                .unwrap_or_else(|e| panic!("helm rendered invalid YAML ({e}):\n{chunk}"));
            docs.push(doc);
        }
    }
    Ok(docs)
}

fn render(release: &str, namespace: &str, values: &Value) -> Vec<Value> {
    try_render(release, namespace, values)
        .unwrap_or_else(|e| panic!("helm template failed with {values}:\n{e}"))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// `kubectl apply --server-side` of `docs` (as one List); `dry_run` asks the apiserver to
/// validate and admit without storing.
fn kubectl_apply(docs: &[&Value], dry_run: bool) -> (bool, String, String) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let mut args = vec![
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=sforg-chart-test",
        "-f",
        "-",
    ];
    if dry_run {
        args.push("--dry-run=server");
    }
    run("kubectl", &args, Some(&list.to_string()))
}

// ---- modes ---------------------------------------------------------------------------------

/// Values that turn every optional object on.
fn everything_on(watch: &[&str]) -> Value {
    json!({
        "watchNamespaces": watch,
        "ingress": {"enabled": true, "host": "sforg.example.com", "className": "nginx",
            "tlsSecretName": "sforg-tls"},
        "serviceMonitor": {"enabled": true},
        "prometheusRule": {"enabled": true},
        "allowedLoginDomains": ["login.acme-sso.example"],
        "salesforce": {"proxy": "http://proxy.internal:3128",
            "extraCA": {"configMap": "corp-ca", "key": "ca.crt"}},
        "replicaCount": 2,
        "expiryLeadTimes": ["14d", "3d", "12h"],
        "notifications": {"channelsSecret": "sforg-notification-channels",
            "defaultChannels": ["team-hook"], "recipientDomains": ["acme.example"]},
    })
}

/// Every option of the hardened set-up: a NetworkPolicy and `/metrics` exposed as `exposure`
/// (loopback or kubeRbacProxy), a ServiceMonitor when something outside the pod can scrape.
fn hardened(watch: &[&str], exposure: &str) -> Value {
    let mut values = everything_on(watch);
    values["metrics"] = json!({"exposure": exposure,
        "kubeRbacProxy": {"readers": [{"namespace": "monitoring", "name": "prometheus-k8s"}]}});
    values["networkPolicy"] = json!({"enabled": true, "ingressControllerNamespace": "ingress",
        "monitoringNamespace": "monitoring", "apiServer": {"cidrs": ["10.96.0.1/32"]}});
    values["serviceMonitor"] = json!({"enabled": exposure != "loopback"});
    values
}

/// Kinds whose CRDs (Prometheus Operator's) this control plane does not have.
const FOREIGN_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

// ---- tests that need only helm -------------------------------------------------------------

#[test]
fn helm_lint_passes_in_both_modes() {
    let chart = chart_dir();
    for (what, values) in [
        ("defaults (cluster-wide)", json!({})),
        ("cluster-wide, everything on", everything_on(&[])),
        ("namespaced, everything on", everything_on(&["backups"])),
        (
            "namespaced, no CRD",
            json!({"watchNamespaces": ["backups"], "crds": {"install": false}}),
        ),
        (
            "three namespaces, NetworkPolicy, kube-rbac-proxy",
            hardened(&["a", "b", "c"], "kubeRbacProxy"),
        ),
        ("NetworkPolicy, loopback metrics", hardened(&[], "loopback")),
    ] {
        let file = values_file(&values);
        let (ok, out, err) = run(
            "helm",
            &[
                "lint",
                "--strict",
                &chart,
                "-f",
                file.to_str().expect("path"),
            ],
            None,
        );
        let _ = std::fs::remove_file(&file);
        assert!(ok, "helm lint failed for {what}:\n{out}\n{err}");
        assert!(out.contains("0 chart(s) failed"), "{what}: {out}");
    }
}

#[test]
fn the_values_schema_refuses_mistakes() {
    for (values, want) in [
        (json!({"watchNamespaces": ["a", "a"]}), "watchNamespaces"),
        (
            json!({"metrics": {"exposure": "public"}}),
            "/metrics/exposure",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "monitoringNamespace": "Bad_NS"}}),
            "/networkPolicy/monitoringNamespace",
        ),
        (
            json!({"serviceMonitor": {"enabled": true}, "metrics": {"exposure": "loopback"}}),
            "nothing outside the pod can scrape",
        ),
        (json!({"watchNamespace": ["a"]}), "watchNamespace"),
        (json!({"logFormat": "xml"}), "logFormat"),
        (
            json!({"publicUrl": "http://sforg.example.com"}),
            "publicUrl",
        ),
        (json!({"refreshKeepalive": "one day"}), "refreshKeepalive"),
        (json!({"expiryLeadTimes": ["a week"]}), "expiryLeadTimes"),
        (json!({"expiryLeadTimes": []}), "expiryLeadTimes"),
        (json!({"ingress": {"enabled": true}}), "ingress.host"),
    ] {
        let err = try_render("sf", "sforg-system", &values)
            .err()
            .unwrap_or_else(|| panic!("helm accepted {values}"));
        assert!(err.contains(want), "{values}: {err}");
    }
}

#[test]
fn the_crd_is_a_kept_template_gated_by_crds_install() {
    let docs = render("sf", "sforg-system", &json!({}));
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    assert_eq!(
        crds[0]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling must not delete the CRD and every SalesforceOrg with it"
    );
    let docs = render("sf", "sforg-system", &json!({"crds": {"install": false}}));
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

fn deployment(docs: &[Value]) -> &Value {
    let found = of_kind(docs, "Deployment");
    assert_eq!(found.len(), 1, "one Deployment");
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

#[test]
fn the_deployment_runs_the_operator_as_configured() {
    let docs = render("sf", "sforg-system", &everything_on(&["backups"]));
    let args = args(&docs);
    for want in [
        "run",
        "--namespace=backups",
        "--public-url=https://sforg.example.com",
        "--callback-listen=0.0.0.0:8080",
        "--metrics-listen=0.0.0.0:9090",
        "--allowed-login-domain=login.acme-sso.example",
        "--salesforce-proxy=http://proxy.internal:3128",
        "--extra-ca-file=/etc/sforg-operator/extra-ca/ca.crt",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} missing in {args:?}");
    }
    let c = container(&docs);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(env.contains(&("POD_NAME", "metadata.name")), "{env:?}");
    assert!(
        env.contains(&("POD_NAMESPACE", "metadata.namespace")),
        "{env:?}"
    );

    // Cluster-wide, no Ingress: no --namespace, no --public-url; publicUrl alone sets it.
    let docs = render("sf", "sforg-system", &json!({}));
    let plain = self::args(&docs);
    assert!(
        !plain
            .iter()
            .any(|a| a.starts_with("--namespace") || a.starts_with("--public-url")),
        "{plain:?}"
    );
    let docs = render(
        "sf",
        "sforg-system",
        &json!({"publicUrl": "https://sforg.gateway.example"}),
    );
    assert!(self::args(&docs).contains(&"--public-url=https://sforg.gateway.example".into()));
    assert!(
        plain.contains(&"--expiry-lead-times=7d,2d".into()),
        "{plain:?}"
    );
    let docs = render(
        "sf",
        "sforg-system",
        &json!({"expiryLeadTimes": ["14d", "3d", "12h"]}),
    );
    assert!(self::args(&docs).contains(&"--expiry-lead-times=14d,3d,12h".into()));
}

#[test]
fn the_operator_cli_accepts_the_rendered_arguments() {
    // clap rejects an unknown option or a bad value before it gets to --help, so this proves
    // every argument the chart renders parses, without starting the operator.
    for values in [
        json!({}),
        everything_on(&["backups"]),
        hardened(&["backups", "billing"], "kubeRbacProxy"),
        hardened(&[], "loopback"),
    ] {
        let docs = render("sf", "sforg-system", &values);
        let mut args = args(&docs);
        args.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_sforg-operator"))
            .args(&args)
            .output()
            .expect("run sforg-operator");
        assert!(
            out.status.success(),
            "sforg-operator refused the chart's arguments {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_alerts_use_the_operators_metric_names() {
    let docs = render("sf", "sforg-system", &everything_on(&[]));
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    let rules = rule[0]["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules");
    let expr = |alert: &str| -> String {
        let r = rules
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("alert {alert}"));
        r["expr"].as_str().expect("expr").to_owned()
    };
    assert!(
        expr("SalesforceOrgExpired")
            .contains(r#"sforg_orgs{job="sf-sforg-operator", state="Expired"}"#)
    );
    assert!(
        expr("SalesforceOrgWaitingForPerson")
            .contains("sforg_org_waiting_for_person_seconds{job=\"sf-sforg-operator\"} > 86400")
    );
    assert!(expr("SalesforceUnreachable").contains(r#"outcome="transient""#));
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["port"], "http-metrics");
}

// ---- RBAC: minimal -------------------------------------------------------------------------

/// One rule, flattened for comparison: (apiGroups, resources, resourceNames, verbs).
type Rule = (String, String, String, String);

fn rules_of(role: &Value) -> BTreeSet<Rule> {
    let join = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                join(&r["apiGroups"]),
                join(&r["resources"]),
                join(&r["resourceNames"]),
                join(&r["verbs"]),
            )
        })
        .collect()
}

fn rule(groups: &str, resources: &str, names: &str, verbs: &str) -> Rule {
    (groups.into(), resources.into(), names.into(), verbs.into())
}

/// What the operator needs where it reconciles: the reviewed list. Adding a permission to the
/// chart means adding it here, on purpose.
fn reconcile_rules() -> BTreeSet<Rule> {
    [
        rule(
            "orgtokens.dev",
            "salesforceorgs",
            "",
            "get,list,watch,patch",
        ),
        rule("orgtokens.dev", "salesforceorgs/status", "", "patch"),
        rule("", "secrets", "", "get,list,watch,create,update"),
        rule("batch", "cronjobs", "", "list,watch,patch"),
        rule("events.k8s.io", "events", "", "create,patch"),
    ]
    .into_iter()
    .collect()
}

/// What it needs in its own namespace: the leader Lease and the callback's state key, each
/// by name (except create, which RBAC cannot narrow to a name).
fn own_namespace_rules(fullname: &str) -> BTreeSet<Rule> {
    [
        rule("coordination.k8s.io", "leases", "", "create"),
        rule(
            "coordination.k8s.io",
            "leases",
            &format!("{fullname}-leader"),
            "get,list,watch,update",
        ),
        rule("", "secrets", "", "create"),
        rule("", "secrets", &format!("{fullname}-state-key"), "get"),
        rule(
            "",
            "secrets",
            "sforg-notification-channels",
            "get,list,watch",
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn the_rbac_is_minimal_in_both_modes() {
    let fullname = "sf-sforg-operator";
    for watch in [vec![], vec!["backups"]] {
        let docs = render("sf", "sforg-system", &everything_on(&watch));
        let roles: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
            .collect();
        // No wildcard anywhere.
        for role in &roles {
            for (groups, resources, names, verbs) in rules_of(role) {
                for field in [&groups, &resources, &names, &verbs] {
                    assert!(!field.contains('*'), "wildcard in {role}");
                }
                assert!(
                    !verbs.contains("delete") && !verbs.contains("escalate"),
                    "{verbs} in {role}"
                );
            }
        }
        let own: Vec<&&Value> = roles
            .iter()
            .filter(|r| r["metadata"]["namespace"] == "sforg-system" && kind(r) == "Role")
            .filter(|r| r["metadata"]["name"] == format!("{fullname}-self"))
            .collect();
        assert_eq!(own.len(), 1);
        assert_eq!(rules_of(own[0]), own_namespace_rules(fullname));

        let cluster_roles = of_kind(&docs, "ClusterRole");
        if watch.is_empty() {
            assert_eq!(cluster_roles.len(), 1);
            assert_eq!(rules_of(cluster_roles[0]), reconcile_rules());
            let bindings = of_kind(&docs, "ClusterRoleBinding");
            assert_eq!(bindings[0]["subjects"][0]["name"], fullname);
            assert_eq!(bindings[0]["subjects"][0]["namespace"], "sforg-system");
        } else {
            // Namespaced: nothing cluster-wide at all, so no Secret outside the watched
            // namespace can be read or written.
            assert!(cluster_roles.is_empty(), "a ClusterRole in namespaced mode");
            assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
            let watched: Vec<&&Value> = roles
                .iter()
                .filter(|r| r["metadata"]["namespace"] == "backups")
                .collect();
            assert_eq!(watched.len(), 1);
            assert_eq!(rules_of(watched[0]), reconcile_rules());
            let bound: Vec<&Value> = of_kind(&docs, "RoleBinding")
                .into_iter()
                .filter(|b| b["metadata"]["namespace"] == "backups")
                .collect();
            assert_eq!(bound[0]["roleRef"]["name"], fullname);
            assert_eq!(bound[0]["subjects"][0]["namespace"], "sforg-system");
        }
    }
}

// ---- on the control plane ------------------------------------------------------------------

async fn create_namespace(client: &Client, name: &str, labels: Value) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace");
    namespaces
        .create(&PostParams::default(), &body)
        .await
        .expect("create namespace");
}

#[tokio::test]
async fn the_apiserver_accepts_the_rendered_chart_in_both_modes() {
    let client = common::client().await;
    let release_ns = common::namespace(&client, "chart-rel").await;
    let watched = common::namespace(&client, "chart-dry").await;
    for watch in [vec![], vec![watched.as_str()]] {
        let docs = render("dry", &release_ns, &everything_on(&watch));
        let (foreign, ours): (Vec<&Value>, Vec<&Value>) =
            docs.iter().partition(|d| FOREIGN_KINDS.contains(&kind(d)));
        assert_eq!(
            foreign.iter().map(|d| kind(d)).collect::<BTreeSet<_>>(),
            FOREIGN_KINDS.into_iter().collect(),
            "only the Prometheus Operator's kinds are left out"
        );
        let (ok, out, err) = kubectl_apply(&ours, true);
        assert!(
            ok,
            "the apiserver refused the chart ({watch:?}):\n{out}\n{err}"
        );
        assert!(!err.contains("Warning"), "{err}");
        let kinds: BTreeSet<&str> = ours.iter().map(|d| kind(d)).collect();
        for k in [
            "Deployment",
            "Service",
            "Ingress",
            "ServiceAccount",
            "Role",
            "RoleBinding",
        ] {
            assert!(kinds.contains(k), "{k} not rendered");
        }
        assert_eq!(
            out.matches("serverside-applied (server dry run)").count(),
            ours.len(),
            "{out}"
        );
    }
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_a_release() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::Role;
    let client = common::client().await;
    let release_ns = common::namespace(&client, "chart-helm").await;
    let watched = common::namespace(&client, "chart-helm-w").await;
    let release = format!("h{}", &release_ns[release_ns.len() - 8..]);
    let chart = chart_dir();
    // The CRD is shared by every test here, so this release leaves it alone; the CRD template
    // is applied for real by the RBAC scenarios below.
    let values = values_file(&json!({
        "watchNamespaces": [watched],
        "crds": {"install": false},
        "ingress": {"enabled": true, "host": "sforg.example.com"},
    }));
    let values = values.to_str().expect("path");
    let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG").expect("kubeconfig");
    let helm = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig, "--namespace", &release_ns]);
        let (ok, out, err) = run("helm", &all, None);
        assert!(ok, "helm {all:?} failed:\n{out}\n{err}");
        out
    };
    // helm checks the real server's version against the chart's kubeVersion here.
    let notes = helm(&["install", &release, &chart, "-f", values]);
    let callback_url = format!("https://sforg.example.com{}", callback::CALLBACK_PATH);
    assert!(notes.contains(&callback_url), "{notes}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let name = format!("{release}-sforg-operator");
    assert_eq!(
        deployments
            .get(&name)
            .await
            .expect("deployment")
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );
    helm(&[
        "upgrade",
        &release,
        &chart,
        "-f",
        values,
        "--set",
        "replicaCount=2",
    ]);
    assert_eq!(
        deployments
            .get(&name)
            .await
            .expect("deployment")
            .spec
            .and_then(|s| s.replicas),
        Some(2)
    );
    helm(&["uninstall", &release, "--wait"]);
    let roles: Api<Role> = Api::namespaced(client.clone(), &watched);
    eventually("the release's Role to be gone", CONVERGE, || async {
        roles.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    let _ = std::fs::remove_file(values);
}

#[tokio::test]
async fn the_pod_meets_pod_security_restricted() {
    let client = common::client().await;
    let ns = format!(
        "chart-pss-{:08x}",
        std::process::id() ^ rand_suffix_source()
    );
    create_namespace(
        &client,
        &ns,
        json!({"pod-security.kubernetes.io/enforce": "restricted",
               "pod-security.kubernetes.io/warn": "restricted"}),
    )
    .await;
    let docs = render("pss", &ns, &everything_on(&[]));
    let template = &deployment(&docs)["spec"]["template"];
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pss", "namespace": ns}, "spec": template["spec"]});
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    pods.create(&dry, &pod)
        .await
        .expect("the chart's pod must be admitted under Pod Security restricted");

    // The check has teeth: the same pod without the capability drop is refused.
    let mut weaker = pod.clone();
    if let Some(spec) = weaker.spec.as_mut()
        && let Some(sc) = spec.containers[0].security_context.as_mut()
    {
        sc.capabilities = None;
    }
    let refused = pods.create(&dry, &weaker).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("PodSecurity")),
        "{refused:?}"
    );
}

fn rand_suffix_source() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

/// Whether the client's identity may do `verb` on `resource` (SelfSubjectAccessReview).
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let body: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
            "subresource": subresource, "namespace": namespace, "name": name}}
    }))
    .expect("review");
    reviews
        .create(&PostParams::default(), &body)
        .await
        .expect("self subject access review")
        .status
        .map(|s| s.allowed)
        .unwrap_or(false)
}

/// An installed release: the chart's CRD, ServiceAccount and RBAC, really applied.
struct Installed {
    fullname: String,
    release_ns: String,
    cluster_wide: bool,
}

async fn install_crd_and_rbac(admin: &Client, release_ns: &str, watch: &[&str]) -> Installed {
    let release = format!("r{}", &release_ns[release_ns.len() - 8..]);
    let docs = render(
        &release,
        release_ns,
        &json!({"watchNamespaces": watch, "ingress": {"enabled": false}}),
    );
    let install: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                kind(d),
                "CustomResourceDefinition"
                    | "ServiceAccount"
                    | "Role"
                    | "RoleBinding"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
            )
        })
        .collect();
    let (ok, out, err) = kubectl_apply(&install, false);
    assert!(
        ok,
        "installing the chart's CRD and RBAC failed:\n{out}\n{err}"
    );
    common::install_crd(admin).await;
    Installed {
        fullname: format!("{release}-sforg-operator"),
        release_ns: release_ns.to_owned(),
        cluster_wide: watch.is_empty(),
    }
}

impl Installed {
    async fn uninstall_cluster_objects(&self, admin: &Client) {
        if self.cluster_wide {
            let dp = DeleteParams::default();
            let roles: Api<ClusterRole> = Api::all(admin.clone());
            let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
            let _ = bindings.delete(&self.fullname, &dp).await;
            let _ = roles.delete(&self.fullname, &dp).await;
        }
    }
}

/// The callback's state key, as the ServiceAccount, with the operator's own code: the first
/// replica creates it in the release namespace, the next reads it.
async fn state_key_works(sa: &Client, installed: &Installed) {
    let name = format!("{}-state-key", installed.fullname);
    let first = callback::load_or_create_key(sa, &installed.release_ns, &name)
        .await
        .expect("create the state key as the ServiceAccount");
    let again = callback::load_or_create_key(sa, &installed.release_ns, &name)
        .await
        .expect("read the state key as the ServiceAccount");
    assert_eq!(first.current().as_bytes(), again.current().as_bytes());
}

/// Permissions the ServiceAccount must not have.
async fn forbidden(sa: &Client, installed: &Installed, watched: &str) {
    let ns = Some(watched);
    let mut denied = vec![
        ("delete", "", "secrets", ns, None),
        ("deletecollection", "", "secrets", ns, None),
        ("update", "batch", "cronjobs", ns, None),
        ("patch", "", "secrets", ns, None),
        ("update", "orgtokens.dev", "salesforceorgs", ns, None),
        ("update", "orgtokens.dev", "salesforceorgs/status", ns, None),
        (
            "update",
            "orgtokens.dev",
            "salesforceorgs/finalizers",
            ns,
            None,
        ),
        ("create", "batch", "cronjobs", ns, None),
        ("delete", "batch", "cronjobs", ns, None),
        ("create", "batch", "jobs", ns, None),
        ("get", "", "pods", ns, None),
        ("get", "", "configmaps", ns, None),
        ("create", "orgtokens.dev", "salesforceorgs", ns, None),
        ("delete", "orgtokens.dev", "salesforceorgs", ns, None),
        (
            "delete",
            "coordination.k8s.io",
            "leases",
            Some(&installed.release_ns),
            None,
        ),
        // Only its own Lease.
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(&installed.release_ns),
            Some("kube-scheduler"),
        ),
        ("create", "rbac.authorization.k8s.io", "roles", ns, None),
        (
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            None,
        ),
        ("impersonate", "", "serviceaccounts", ns, None),
    ];
    if !installed.cluster_wide {
        denied.extend([
            ("list", "", "secrets", None, None),
            ("list", "", "secrets", Some("default"), None),
            ("get", "", "secrets", Some("default"), Some("anything")),
            ("create", "", "secrets", Some("default"), None),
            ("list", "orgtokens.dev", "salesforceorgs", None, None),
            ("patch", "batch", "cronjobs", Some("default"), None),
            // In its own namespace it reads only the state key, never another Secret.
            (
                "get",
                "",
                "secrets",
                Some(&installed.release_ns),
                Some("other"),
            ),
            ("list", "", "secrets", Some(&installed.release_ns), None),
        ]);
    }
    for (verb, group, resource, ns, name) in denied {
        assert!(
            !can(sa, verb, group, resource, ns, name).await,
            "the ServiceAccount may {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }
}

/// The calls the cluster-wide controller makes that a namespaced test run cannot: list and
/// watch across every namespace.
async fn cluster_wide_reads_work(sa: &Client) {
    let orgs: Api<SalesforceOrg> = Api::all(sa.clone());
    orgs.list(&ListParams::default().limit(1))
        .await
        .expect("list SalesforceOrgs in every namespace");
    let secrets: Api<Secret> = Api::all(sa.clone());
    let managed = ListParams::default()
        .labels("app.kubernetes.io/managed-by=sforg-operator")
        .limit(1);
    secrets
        .list(&managed)
        .await
        .expect("list the operator's Secrets in every namespace");
    for watch in [
        orgs.watch(&WatchParams::default().timeout(1), "0")
            .await
            .map(|_| ()),
        secrets
            .watch(
                &WatchParams::default()
                    .labels("app.kubernetes.io/managed-by=sforg-operator")
                    .timeout(1),
                "0",
            )
            .await
            .map(|_| ()),
    ] {
        watch.expect("watch in every namespace");
    }
}

type Elected = tokio::task::JoinHandle<Result<(), sforg_operator::leader::LeaderError>>;

/// Runs `work` under the operator's leader election on `lease`, as the ServiceAccount.
fn elect<W, Fut>(
    sa: &Client,
    installed: &Installed,
    lease: &str,
    identity: &str,
    work: W,
) -> (oneshot::Sender<()>, Elected)
where
    W: FnMut(Stop) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let config = LeaseConfig {
        lease_duration: Duration::from_secs(4),
        renew_interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(5),
        ..LeaseConfig::new(lease, &installed.release_ns, identity)
    };
    let elector = Elector::new(sa.clone(), config).expect("elector");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(
        async move {
            let _ = stop_rx.await;
        },
        work,
    ));
    (stop_tx, task)
}

async fn wait_suspended(op: &Operator, name: &str, want: bool) -> CronJob {
    op.wait_suspended(name, want).await
}

/// The whole story, with the controller acting as the chart's ServiceAccount: a web org and a
/// headless JWT org connect (the operator creates and replaces token Secrets), a refresh
/// rotates tokens, a revocation makes the org Expired and suspends its CronJob (patch, events),
/// new tokens make it Valid and resume the CronJob, and deleting the org runs the finalizer.
async fn scenario_under_chart_rbac(prefix: &str, cluster_wide: bool) {
    let op = Operator::prepare(prefix).await;
    let admin = op.client.clone();
    let release_ns = common::namespace(&admin, "chart-sys").await;
    let watch: Vec<&str> = if cluster_wide {
        vec![]
    } else {
        vec![op.ns.as_str()]
    };
    let installed = install_crd_and_rbac(&admin, &release_ns, &watch).await;
    let sa = common::service_account_client(&admin, &release_ns, &installed.fullname).await;

    state_key_works(&sa, &installed).await;
    forbidden(&sa, &installed, &op.ns).await;
    if cluster_wide {
        cluster_wide_reads_work(&sa).await;
    }

    // The operator itself, as the ServiceAccount, under leader election on the chart's
    // Lease, as `sforg-operator run` does. (A cluster-wide controller would also reconcile the
    // other tests' orgs, so it watches this test's namespace; the cluster-wide list and watch
    // calls are proven above.)
    let lease = format!("{}-leader", installed.fullname);
    let (stop_leader, leader) = {
        let salesforce = HttpSalesforce::new(http_settings(&op.sim)).expect("http client");
        let scope = Scope {
            namespaces: vec![op.ns.clone()],
        };
        let client = sa.clone();
        elect(&sa, &installed, &lease, "pod-a", move |stop| {
            controller::run(
                client.clone(),
                salesforce.clone(),
                Settings::default(),
                scope.clone(),
                "pod-a".into(),
                stop,
            )
        })
    };
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &installed.release_ns);
    eventually("pod-a to lead", CONVERGE, || async {
        let held = leases.get(&lease).await.ok()?.spec?.holder_identity;
        (held.as_deref() == Some("pod-a")).then_some(())
    })
    .await;
    // What a standby does besides polling: list and watch the Lease by name (RBAC narrows
    // list and watch to resourceNames only through this field selector).
    {
        use futures::StreamExt;
        let sa_leases: Api<Lease> = Api::namespaced(sa.clone(), &installed.release_ns);
        let by_name = format!("metadata.name={lease}");
        sa_leases
            .list(&ListParams::default().fields(&by_name))
            .await
            .expect("list the Lease by name as the ServiceAccount");
        let stream = sa_leases
            .watch(&WatchParams::default().fields(&by_name).timeout(1), "0")
            .await
            .expect("watch the Lease by name as the ServiceAccount");
        let first = tokio::time::timeout(Duration::from_secs(5), std::pin::pin!(stream).next())
            .await
            .expect("a watch event");
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
    }
    // A standby watches the Lease.
    let (took_over_tx, mut took_over) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (stop_standby, standby) = elect(&sa, &installed, &lease, "pod-b", move |stop| {
        let took_over = took_over_tx.clone();
        async move {
            let _ = took_over.send(());
            stop.await;
        }
    });
    op.sim
        .control()
        .set_rotation(&op.demo.app.client_id, true)
        .expect("rotation");
    op.create_cronjob("nightly", &[("orgtokens.dev/org", "acme")], false)
        .await;
    op.ensure_app_secret().await;
    op.create_org(
        "acme",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "acme-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "acme"}}},
        }),
    )
    .await;
    let seeded = op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    // A headless org: the operator creates its token Secret.
    let ctl = op.sim.control();
    let key = ctl
        .enable_jwt(&op.demo.app.client_id, &op.demo.user.username)
        .expect("jwt");
    let jwt_key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "jwt-key"}, "stringData": {"tls.key": key.private_key_pem},
    }))
    .expect("secret");
    op.secrets()
        .create(&PostParams::default(), &jwt_key)
        .await
        .expect("jwt key");
    op.create_org(
        "headless",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"jwtBearer": {"clientId": op.demo.app.client_id,
                "username": op.demo.user.username,
                "privateKeyRef": {"name": "jwt-key", "key": "tls.key"}}},
            "tokenSecretRef": {"name": "headless-token"},
        }),
    )
    .await;
    op.wait_state("headless", TokenState::Valid, None).await;
    let created = op.secrets().get("headless-token").await.expect("created");
    assert_eq!(
        created.owner_references().first().map(|o| o.name.as_str()),
        Some("headless")
    );

    // Sessions die: the refresh rotates the tokens and the operator replaces the Secret.
    op.expire_sessions_and_check("acme").await;
    eventually("the rotated tokens to be stored", CONVERGE, || async {
        let data = op.secret_data("acme-token").await;
        (data.get("refresh_token") != seeded.refresh_token.as_ref()).then_some(())
    })
    .await;
    op.wait_state("acme", TokenState::Valid, None).await;

    // Revoked: Expired, the backup suspended, Events published.
    ctl.revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    let cj = wait_suspended(&op, "nightly", true).await;
    assert_eq!(
        cj.annotations().get(HOLDERS_ANNOTATION).map(String::as_str),
        Some("acme")
    );
    eventually("the Events of the expiry", CONVERGE, || async {
        let reasons: BTreeSet<String> = op
            .events_for("acme")
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        (reasons.contains("TokenExpired") && reasons.contains("CronJobsSuspended")).then_some(())
    })
    .await;

    // A person logs in again: Valid, the backup resumed.
    let tokens = ctl
        .mint_tokens(&op.demo.app.client_id, &op.demo.user.username)
        .expect("mint");
    let patch = json!({"stringData": {"access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token, "instance_url": tokens.instance_url,
        "issued_at": tokens.issued_at}});
    op.secrets()
        .patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("store new tokens");
    op.wait_state("acme", TokenState::Valid, None).await;
    let cj = wait_suspended(&op, "nightly", false).await;
    assert_eq!(cj.annotations().get(HOLDERS_ANNOTATION), None);

    // Deleting an org: the finalizer runs and lets it go.
    op.orgs()
        .delete("headless", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the org to be gone", CONVERGE, || async {
        op.orgs()
            .get_opt("headless")
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    })
    .await;

    // The leader stops: it releases the Lease and the standby takes over at once.
    let _ = stop_leader.send(());
    tokio::time::timeout(CONVERGE, leader)
        .await
        .expect("the leader to stop")
        .expect("join")
        .expect("the leader released the Lease");
    tokio::time::timeout(CONVERGE, took_over.recv())
        .await
        .expect("the standby to take over");
    let _ = stop_standby.send(());
    tokio::time::timeout(CONVERGE, standby)
        .await
        .expect("the standby to stop")
        .expect("join")
        .expect("the standby released the Lease");
    let held = leases.get(&lease).await.expect("lease").spec;
    assert_eq!(held.and_then(|s| s.holder_identity), None);

    installed.uninstall_cluster_objects(&admin).await;
}

#[tokio::test]
async fn the_operator_runs_under_the_namespaced_rbac() {
    scenario_under_chart_rbac("chart-ns", false).await;
}

#[tokio::test]
async fn the_operator_runs_under_the_cluster_wide_rbac() {
    scenario_under_chart_rbac("chart-cw", true).await;
}

// ---- metrics exposure and the NetworkPolicy ---------------------------------------------------

/// `(from namespace, ports)` of each ingress rule, `(to, ports)` of each egress rule.
fn policy_rules(policy: &Value, direction: &str, peer: &str) -> Vec<(String, Vec<String>)> {
    policy["spec"][direction]
        .as_array()
        .unwrap_or_else(|| panic!("{direction} rules"))
        .iter()
        .map(|r| {
            let from = r[peer]
                .as_array()
                .map(|peers| {
                    peers
                        .iter()
                        .map(|p| {
                            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| p["ipBlock"]["cidr"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| "?".into())
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "anywhere".into());
            let ports = r["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("?")))
                        .collect()
                })
                .unwrap_or_default();
            (from, ports)
        })
        .collect()
}

#[test]
fn the_network_policy_lets_in_and_out_only_what_is_needed() {
    let docs = render("sf", "sforg-system", &json!({}));
    assert!(of_kind(&docs, "NetworkPolicy").is_empty(), "off by default");

    let docs = render("sf", "sforg-system", &hardened(&["backups"], "all"));
    let policies = of_kind(&docs, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let policy = policies[0];
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment(&docs)["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let p = |s: &str| s.to_owned();
    assert_eq!(
        policy_rules(policy, "ingress", "from"),
        [
            (p("ingress"), vec![p("8080/TCP")]),
            (p("monitoring"), vec![p("9090/TCP")]),
        ]
    );
    assert_eq!(
        policy_rules(policy, "egress", "to"),
        [
            (p("kube-system"), vec![p("53/UDP"), p("53/TCP")]),
            (p("10.96.0.1/32"), vec![p("443/TCP"), p("6443/TCP")]),
            (p("anywhere"), vec![p("443/TCP")]),
        ]
    );
    // Behind kube-rbac-proxy the monitoring namespace reaches the proxy's port; with metrics
    // on loopback, nothing but the callback comes in.
    let docs = render("sf", "sforg-system", &hardened(&[], "kubeRbacProxy"));
    let ingress = policy_rules(of_kind(&docs, "NetworkPolicy")[0], "ingress", "from");
    assert_eq!(ingress[1], (p("monitoring"), vec![p("8443/TCP")]));
    let docs = render("sf", "sforg-system", &hardened(&[], "loopback"));
    let ingress = policy_rules(of_kind(&docs, "NetworkPolicy")[0], "ingress", "from");
    assert_eq!(ingress, [(p("ingress"), vec![p("8080/TCP")])]);
}

fn container_named<'a>(docs: &'a [Value], name: &str) -> Option<&'a Value> {
    deployment(docs)["spec"]["template"]["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn service_ports(docs: &[Value]) -> Vec<(String, i64)> {
    of_kind(docs, "Service")[0]["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn metrics_can_stay_on_loopback_or_behind_kube_rbac_proxy() {
    // Default: every address, as before.
    let docs = render("sf", "sforg-system", &json!({}));
    assert!(args(&docs).contains(&"--metrics-listen=0.0.0.0:9090".to_owned()));
    assert!(!args(&docs).iter().any(|a| a.starts_with("--health-listen")));

    for exposure in ["loopback", "kubeRbacProxy"] {
        let docs = render("sf", "sforg-system", &hardened(&[], exposure));
        let args = args(&docs);
        assert!(
            args.contains(&"--metrics-listen=127.0.0.1:9090".to_owned()),
            "{exposure}: {args:?}"
        );
        assert!(
            args.contains(&"--health-listen=0.0.0.0:9091".to_owned()),
            "{exposure}: {args:?}"
        );
        // The kubelet probes the health-only port; no port publishes /metrics directly.
        let c = container(&docs);
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http-health");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http-health");
        let ports: Vec<&str> = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(ports, ["http-callback", "http-health"], "{exposure}");
        assert!(
            !service_ports(&docs)
                .iter()
                .any(|(n, _)| n == "http-metrics"),
            "{exposure}"
        );
    }

    let docs = render("sf", "sforg-system", &hardened(&[], "loopback"));
    assert!(container_named(&docs, "kube-rbac-proxy").is_none());
    assert_eq!(service_ports(&docs), [("http-callback".to_owned(), 8080)]);

    let docs = render("sf", "sforg-system", &hardened(&[], "kubeRbacProxy"));
    let proxy = container_named(&docs, "kube-rbac-proxy").expect("the sidecar");
    let proxy_args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        proxy_args,
        [
            "--secure-listen-address=0.0.0.0:8443",
            "--upstream=http://127.0.0.1:9090/",
            "--allow-paths=/metrics",
        ]
    );
    assert_eq!(
        service_ports(&docs),
        [
            ("http-callback".to_owned(), 8080),
            ("https-metrics".to_owned(), 8443)
        ]
    );
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "https-metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    // The proxy's RBAC: token and access reviews, and a reader role bound to the scraper.
    let cluster_roles = of_kind(&docs, "ClusterRole");
    let named = |suffix: &str| {
        cluster_roles
            .iter()
            .find(|r| r["metadata"]["name"] == format!("sf-sforg-operator-{suffix}"))
            .copied()
            .unwrap_or_else(|| panic!("ClusterRole {suffix}"))
    };
    assert_eq!(
        rules_of(named("metrics-auth")),
        [
            rule("authentication.k8s.io", "tokenreviews", "", "create"),
            rule("authorization.k8s.io", "subjectaccessreviews", "", "create"),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        named("metrics-reader")["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let reader = of_kind(&docs, "ClusterRoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["name"] == "sf-sforg-operator-metrics-reader")
        .expect("reader binding");
    assert_eq!(
        reader["subjects"],
        json!([{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}])
    );
}

#[test]
fn several_namespaces_get_a_role_each_and_nothing_cluster_wide() {
    let fullname = "sf-sforg-operator";
    let watch = ["backups", "billing", "crm"];
    let docs = render("sf", "sforg-system", &everything_on(&watch));
    let args = args(&docs);
    for ns in watch {
        assert!(args.contains(&format!("--namespace={ns}")), "{args:?}");
        let roles: Vec<&Value> = of_kind(&docs, "Role")
            .into_iter()
            .filter(|r| r["metadata"]["namespace"] == ns)
            .collect();
        assert_eq!(roles.len(), 1, "{ns}");
        assert_eq!(rules_of(roles[0]), reconcile_rules(), "{ns}");
        let bound: Vec<&Value> = of_kind(&docs, "RoleBinding")
            .into_iter()
            .filter(|b| b["metadata"]["namespace"] == ns)
            .collect();
        assert_eq!(bound.len(), 1, "{ns}");
        assert_eq!(bound[0]["roleRef"]["name"], fullname);
        assert_eq!(bound[0]["subjects"][0]["namespace"], "sforg-system");
    }
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    // Three watched namespaces and the release's own: four Roles in all.
    assert_eq!(of_kind(&docs, "Role").len(), 4);
}

#[tokio::test]
async fn the_apiserver_accepts_the_network_policy_and_metrics_options() {
    let client = common::client().await;
    let release_ns = common::namespace(&client, "chart-np").await;
    let a = common::namespace(&client, "chart-np-a").await;
    let b = common::namespace(&client, "chart-np-b").await;
    for (watch, exposure) in [
        (vec![a.as_str(), b.as_str()], "kubeRbacProxy"),
        (vec![], "loopback"),
    ] {
        let docs = render("np", &release_ns, &hardened(&watch, exposure));
        let ours: Vec<&Value> = docs
            .iter()
            .filter(|d| !FOREIGN_KINDS.contains(&kind(d)))
            .collect();
        assert!(ours.iter().any(|d| kind(d) == "NetworkPolicy"));
        let (ok, out, err) = kubectl_apply(&ours, true);
        assert!(
            ok,
            "the apiserver refused the chart ({watch:?}, {exposure}):\n{out}\n{err}"
        );
        assert!(!err.contains("Warning"), "{err}");
        assert_eq!(
            out.matches("serverside-applied (server dry run)").count(),
            ours.len(),
            "{out}"
        );
    }
}

/// The pod with the kube-rbac-proxy sidecar still meets Pod Security "restricted".
#[tokio::test]
async fn the_pod_with_kube_rbac_proxy_meets_pod_security_restricted() {
    let client = common::client().await;
    let ns = format!(
        "chart-pss-krp-{:08x}",
        std::process::id() ^ rand_suffix_source()
    );
    create_namespace(
        &client,
        &ns,
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let docs = render("pss", &ns, &hardened(&[], "kubeRbacProxy"));
    let template = &deployment(&docs)["spec"]["template"];
    assert_eq!(
        template["spec"]["containers"].as_array().map(Vec::len),
        Some(2)
    );
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pss", "namespace": ns}, "spec": template["spec"]}))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    pods.create(&dry, &pod)
        .await
        .expect("the pod with kube-rbac-proxy must be admitted under Pod Security restricted");
}

/// Namespaced mode over several namespaces, as the chart's ServiceAccount with only the
/// chart's Roles: one controller reconciles the orgs of every listed namespace (created,
/// re-listed and deleted), leaves an unlisted namespace alone, and cannot touch it.
#[tokio::test]
async fn one_release_reconciles_several_namespaces_under_their_roles() {
    let op = Operator::prepare("chart-many").await;
    let admin = op.client.clone();
    let other = common::namespace(&admin, "chart-many-b").await;
    let unlisted = common::namespace(&admin, "chart-many-c").await;
    let release_ns = common::namespace(&admin, "chart-many-sys").await;
    let installed =
        install_crd_and_rbac(&admin, &release_ns, &[op.ns.as_str(), other.as_str()]).await;
    let sa = common::service_account_client(&admin, &release_ns, &installed.fullname).await;
    forbidden(&sa, &installed, &op.ns).await;
    for ns in [&op.ns, &other] {
        assert!(
            can(&sa, "list", "", "secrets", Some(ns), None).await,
            "{ns}"
        );
        assert!(
            can(&sa, "patch", "batch", "cronjobs", Some(ns), None).await,
            "{ns}"
        );
    }
    for (verb, group, resource) in [
        ("list", "", "secrets"),
        ("get", "", "secrets"),
        ("patch", "batch", "cronjobs"),
        ("list", "orgtokens.dev", "salesforceorgs"),
    ] {
        assert!(
            !can(&sa, verb, group, resource, Some(&unlisted), None).await,
            "{verb} {resource} in the unlisted namespace"
        );
    }

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let controller = {
        let salesforce = HttpSalesforce::new(http_settings(&op.sim)).expect("http client");
        let scope = Scope {
            namespaces: vec![op.ns.clone(), other.clone()],
        };
        tokio::spawn(controller::run(
            sa.clone(),
            salesforce,
            Settings::default(),
            scope,
            "many".into(),
            async move {
                let _ = stop_rx.await;
            },
        ))
    };

    // An org in each listed namespace, and one in the unlisted namespace.
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    let app_secret = op.secrets().get("demo-app").await.expect("app secret");
    for ns in [&other, &unlisted] {
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
        let copy: Secret = serde_json::from_value(json!({
            "metadata": {"name": "demo-app"}, "data": app_secret.data,
        }))
        .expect("secret");
        secrets
            .create(&PostParams::default(), &copy)
            .await
            .expect("app secret");
        let tokens = op
            .sim
            .control()
            .mint_tokens(&op.demo.app.client_id, &op.demo.user.username)
            .expect("mint");
        let token_secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "beta-token", "labels": {
                "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": "beta"}},
            "stringData": {"access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token, "instance_url": tokens.instance_url,
                "issued_at": tokens.issued_at},
        }))
        .expect("secret");
        secrets
            .create(&PostParams::default(), &token_secret)
            .await
            .expect("token secret");
        let orgs: Api<SalesforceOrg> = Api::namespaced(admin.clone(), ns);
        let org: SalesforceOrg = serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": "beta"},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"webServer": {"clientId": op.demo.app.client_id,
                    "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
                "tokenSecretRef": {"name": "beta-token"}},
        }))
        .expect("org");
        orgs.create(&PostParams::default(), &org)
            .await
            .expect("create org");
    }
    op.wait_state("acme", TokenState::Valid, None).await;
    let state = |ns: &str| {
        let orgs: Api<SalesforceOrg> = Api::namespaced(admin.clone(), ns);
        async move {
            orgs.get("beta")
                .await
                .ok()
                .and_then(|o| o.status)
                .and_then(|s| s.state)
        }
    };
    eventually(
        "beta in the second namespace to be Valid",
        CONVERGE,
        || async { (state(&other).await == Some(TokenState::Valid)).then_some(()) },
    )
    .await;
    assert_eq!(
        state(&unlisted).await,
        None,
        "the unlisted namespace is left alone"
    );

    // Deleting the second namespace's org: the finalizer runs there too.
    let orgs: Api<SalesforceOrg> = Api::namespaced(admin.clone(), &other);
    orgs.delete("beta", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("beta to be gone", CONVERGE, || async {
        orgs.get_opt("beta")
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(CONVERGE, controller)
        .await
        .expect("the controller to stop")
        .expect("join");
    // The unlisted namespace's org never got a finalizer, so the admin can delete it.
    let orgs: Api<SalesforceOrg> = Api::namespaced(admin.clone(), &unlisted);
    let beta = orgs.get("beta").await.expect("org");
    assert!(beta.finalizers().is_empty());
    installed.uninstall_cluster_objects(&admin).await;
}
