//! Shared harness for integration tests: one real control plane per run (started by
//! `scripts/test.sh`), one namespace per test.

#![allow(dead_code)]
// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, Config, CustomResourceExt};
use sforg_operator::crd::SalesforceOrg;

/// Field manager the tests use when they act as a person with kubectl.
pub const TEST_MANAGER: &str = "sforg-tests";

/// The kubeconfig of the shared test control plane. Fails loudly when there is none: a
/// missing control plane is a broken test run, never a skipped test.
pub fn kubeconfig_path() -> std::path::PathBuf {
    let path = std::env::var("SFORG_TEST_KUBECONFIG").unwrap_or_else(|_| {
        panic!(
            "SFORG_TEST_KUBECONFIG is not set: run the tests with scripts/test.sh, which starts \
             a real etcd + kube-apiserver and points the tests at it"
        )
    });
    path.into()
}

/// A client for the test control plane.
pub async fn client() -> Client {
    client_from(&kubeconfig_path()).await
}

/// The client configuration of the control plane behind `kubeconfig`.
pub async fn config_from(kubeconfig: &std::path::Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read the test kubeconfig");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load the test kubeconfig")
}

/// A client for the control plane behind `kubeconfig` (a test's own control plane).
pub async fn client_from(kubeconfig: &std::path::Path) -> Client {
    Client::try_from(config_from(kubeconfig).await).expect("build a client")
}

/// A client that acts as the ServiceAccount `ns/name`, with a token from the TokenRequest API
/// (what a pod of that ServiceAccount presents), for tests that prove RBAC is enough.
pub async fn service_account_client(admin: &Client, ns: &str, name: &str) -> Client {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"expirationSeconds": 3600}
    }))
    .expect("token request");
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("request a ServiceAccount token")
        .status
        .expect("token request status")
        .token;
    let path = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the test kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load the test kubeconfig");
    // Only the token: no admin client certificate.
    config.auth_info =
        serde_json::from_value(serde_json::json!({ "token": token })).expect("token auth info");
    Client::try_from(config).expect("build a ServiceAccount client")
}

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Installs the generated CRD (idempotent, safe from parallel tests) and waits until the
/// apiserver reports it Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SalesforceOrg::crd();
    let name = crd.metadata.name.clone().expect("crd name");
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    eventually("the CRD to be Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let crd = crds.get(&name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
}

/// Creates a fresh namespace for one test, with the CRD installed.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    install_crd(client).await;
    let suffix: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos()) ^ rand_u32();
    let name = format!("{prefix}-{:08x}", suffix);
    let ns: Api<Namespace> = Api::all(client.clone());
    let body = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"sforg-test": "true"}}
    }))
    .expect("namespace body");
    ns.create(&PostParams::default(), &body)
        .await
        .expect("create the test namespace");
    name
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// An untyped API for SalesforceOrgs, so tests can send what the Rust types would refuse.
pub fn raw_orgs(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<SalesforceOrg>(&());
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A valid web-server org as JSON, for tests to mutate.
pub fn valid_org_json(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "orgtokens.dev/v1alpha1",
        "kind": "SalesforceOrg",
        "metadata": {"name": name},
        "spec": {
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": "3MVG9testclientid", "scopes": ["api", "refresh_token"]}},
            "tokenSecretRef": {"name": format!("{name}-token")},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": name}}},
            "checkInterval": "15m"
        }
    })
}

pub mod browser;
/// Runs `scenario(kind)` as two tests, `scenario::connected_app` and
/// `scenario::external_client_app` (the suites that hold for either kind of Salesforce app).
#[allow(unused_macros)]
macro_rules! for_both_kinds {
    ($scenario:ident) => {
        mod $scenario {
            use sforg_simulator::AppKind;

            #[tokio::test]
            async fn connected_app() {
                super::$scenario(AppKind::ConnectedApp).await
            }

            #[tokio::test]
            async fn external_client_app() {
                super::$scenario(AppKind::ExternalClientApp).await
            }
        }
    };
}

pub mod operator;
pub mod org;
pub mod replica;
