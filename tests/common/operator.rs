//! An operator under test: a Salesforce simulator, and the controller running in this process
//! against the real control plane, scoped to the test's own namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::org::OrgSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sforg_operator::callback::{self, CallbackState, DEFAULT_LINK_LIFETIME, Links};
use sforg_operator::clock::Clock;
use sforg_operator::controller::{self, Scope};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::dependents::HOLDERS_ANNOTATION;
use sforg_operator::reconcile::{CHECK_ANNOTATION, Settings};
use sforg_operator::salesforce::allowlist::HostAllowlist;
use sforg_operator::salesforce::{HttpSalesforce, HttpSettings};
use sforg_simulator::{AppKind, DemoOptions, DemoSeed, Simulator};
use tokio::sync::oneshot;

use super::{TEST_MANAGER, client_from, eventually, kubeconfig_path, namespace};

/// How long a test waits for the operator to converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

pub struct Operator {
    pub client: Client,
    pub ns: String,
    pub sim: Simulator,
    pub demo: DemoSeed,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The controller's own client when it differs from `client` (the admin the test acts
    /// as), for example a ServiceAccount's.
    controller_client: Option<Client>,
    /// The re-auth callback server, when started with [`Operator::start_with_reauth`].
    pub reauth: Option<Reauth>,
    /// The controller's clock (and its JWT assertions'); set before starting the controller
    /// to rehearse a skewed node.
    pub clock: Clock,
    /// The controller's expiry lead times (`--expiry-lead-times`); set before starting it.
    pub expiry_lead_times: Vec<Duration>,
    /// Notifications, when set before starting the controller.
    pub notify: Option<sforg_operator::notify::Notifier>,
    /// The controller's metrics, when set before starting the controller.
    pub metrics: Option<std::sync::Arc<sforg_operator::metrics::Metrics>>,
}

/// A re-auth callback server on a loopback port, serving the operator's links.
pub struct Reauth {
    /// `http://127.0.0.1:PORT`, the operator's public URL.
    pub public_url: String,
    /// Issues and checks links, with the key the server uses.
    pub links: Links,
    task: tokio::task::JoinHandle<()>,
}

/// HTTP settings that reach the simulator through its proxy, trusting its CA.
pub fn http_settings(sim: &Simulator) -> HttpSettings {
    HttpSettings {
        proxy: Some(sim.proxy_url().to_owned()),
        extra_ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
        timeout: Duration::from_secs(3),
        allowlist: HostAllowlist::default(),
        ..HttpSettings::default()
    }
}

impl Operator {
    /// A fresh namespace, a simulator seeded with the demo org, and a running operator.
    pub async fn start(prefix: &str) -> Self {
        Self::start_kind(prefix, AppKind::ConnectedApp).await
    }

    /// [`Operator::start`] with the demo app a Connected App or an External Client App.
    pub async fn start_kind(prefix: &str, kind: AppKind) -> Self {
        let mut op = Self::prepare_with(
            prefix,
            DemoOptions {
                kind,
                ..DemoOptions::default()
            },
        )
        .await;
        op.start_controller();
        op
    }

    /// A fresh namespace and a seeded simulator, with no controller running yet: start one
    /// with [`Operator::start_controller`] or [`Operator::start_controller_as`].
    pub async fn prepare(prefix: &str) -> Self {
        Self::prepare_with(prefix, DemoOptions::default()).await
    }

    /// [`Operator::prepare`] with the demo seeded with `options`.
    pub async fn prepare_with(prefix: &str, options: DemoOptions) -> Self {
        Self::prepare_in(&kubeconfig_path(), prefix, options).await
    }

    /// [`Operator::prepare_with`] on the control plane behind `kubeconfig` (a test's own,
    /// instead of the shared one).
    pub async fn prepare_in(kubeconfig: &Path, prefix: &str, options: DemoOptions) -> Self {
        let client = client_from(kubeconfig).await;
        let ns = namespace(&client, prefix).await;
        let sim = Simulator::start().await.expect("start the simulator");
        let demo = sim
            .control()
            .seed_demo_with(options)
            .expect("seed the simulator");
        Operator {
            client,
            ns,
            sim,
            demo,
            stop: None,
            task: None,
            controller_client: None,
            reauth: None,
            clock: Clock::system(),
            expiry_lead_times: Settings::default().expiry_lead_times,
            notify: None,
            metrics: None,
        }
    }

    /// A running operator that also serves re-auth links and the OAuth callback on a random
    /// loopback port (its public URL), with the demo app's callback URL set to it and the
    /// signing key in the test namespace's `sforg-operator-state-key`.
    pub async fn start_with_reauth(prefix: &str) -> Self {
        Self::start_with_reauth_kind(prefix, AppKind::ConnectedApp).await
    }

    /// [`Operator::start_with_reauth`] with the demo app a Connected App or an External
    /// Client App.
    pub async fn start_with_reauth_kind(prefix: &str, kind: AppKind) -> Self {
        let mut op = Self::prepare_with_reauth(prefix, kind).await;
        op.start_controller();
        op
    }

    /// [`Operator::start_with_reauth_kind`] without starting the controller: adjust its
    /// settings, then call [`Operator::start_controller`].
    pub async fn prepare_with_reauth(prefix: &str, kind: AppKind) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the callback port");
        let port = listener.local_addr().expect("callback address").port();
        let public_url = format!("http://127.0.0.1:{port}");
        let options = DemoOptions {
            redirect_uris: vec![format!("{public_url}{}", callback::CALLBACK_PATH)],
            rotation: true,
            kind,
        };
        let mut op = Self::prepare_with(prefix, options).await;
        let key = callback::load_or_create_key(&op.client, &op.ns, callback::DEFAULT_KEY_SECRET)
            .await
            .expect("the state key");
        let links = Links::new(&public_url, key, DEFAULT_LINK_LIFETIME).expect("links");
        let router = callback::router(CallbackState {
            client: op.client.clone(),
            salesforce: HttpSalesforce::new(http_settings(&op.sim)).expect("http client"),
            links: links.clone(),
            allowlist: HostAllowlist::default(),
            revoke_superseded: true,
            clock: Clock::system(),
        });
        let task = tokio::spawn(async move {
            let _ = callback::serve(listener, router, std::future::pending()).await;
        });
        op.reauth = Some(Reauth {
            public_url,
            links,
            task,
        });
        op
    }

    /// (Re)starts the controller in this process with its own client (the test keeps acting
    /// as the admin through `client`).
    pub fn start_controller_as(&mut self, client: Client) {
        self.controller_client = Some(client);
        self.start_controller();
    }

    /// A running operator with the web org `acme` connected (Valid), with refresh token
    /// rotation on or off; returns the tokens it was seeded with.
    pub async fn with_valid_org(
        prefix: &str,
        rotation: bool,
    ) -> (Self, sforg_simulator::TokenResponse) {
        Self::with_valid_org_kind(prefix, rotation, AppKind::ConnectedApp).await
    }

    /// [`Operator::with_valid_org`] with the demo app a Connected App or an External Client
    /// App.
    pub async fn with_valid_org_kind(
        prefix: &str,
        rotation: bool,
        kind: AppKind,
    ) -> (Self, sforg_simulator::TokenResponse) {
        let op = Self::start_kind(prefix, kind).await;
        op.sim
            .control()
            .set_rotation(&op.demo.app.client_id, rotation)
            .expect("set rotation");
        op.create_web_org("acme").await;
        let seeded = op.seed_tokens("acme-token", "acme").await;
        op.wait_state("acme", TokenState::Valid, None).await;
        (op, seeded)
    }

    /// Kills every access token at Salesforce, then asks for a check of `name`.
    pub async fn expire_sessions_and_check(&self, name: &str) {
        self.sim.control().expire_all_sessions();
        self.request_check(name).await;
    }

    /// (Re)starts the controller in this process.
    pub fn start_controller(&mut self) {
        let settings = HttpSettings {
            clock: self.clock,
            ..http_settings(&self.sim)
        };
        let salesforce = HttpSalesforce::new(settings).expect("http client");
        let (tx, rx) = oneshot::channel::<()>();
        let client = self
            .controller_client
            .clone()
            .unwrap_or_else(|| self.client.clone());
        let task = tokio::spawn(controller::run_with(
            client,
            salesforce,
            Settings {
                reauth: self.reauth.as_ref().map(|r| r.links.clone()),
                clock: self.clock,
                expiry_lead_times: self.expiry_lead_times.clone(),
                notify: self.notify.clone(),
                ..Settings::default()
            },
            Scope {
                namespaces: vec![self.ns.clone()],
            },
            "test".into(),
            async move {
                let _ = rx.await;
            },
            controller::Hooks {
                metrics: self.metrics.clone(),
                health: None,
            },
        ));
        self.stop = Some(tx);
        self.task = Some(task);
    }

    /// Stops the controller (abruptly: the task is aborted, as a killed process would be).
    pub async fn kill_controller(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.stop = None;
    }

    pub fn orgs(&self) -> Api<SalesforceOrg> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Stores tokens minted by the simulator for the demo user, as a person migrating an
    /// existing connection would.
    pub async fn seed_tokens(&self, secret: &str, org: &str) -> sforg_simulator::TokenResponse {
        let tokens = self
            .sim
            .control()
            .mint_tokens(&self.demo.app.client_id, &self.demo.user.username)
            .expect("mint tokens");
        let mut data = BTreeMap::new();
        data.insert("access_token".to_owned(), tokens.access_token.clone());
        if let Some(rt) = &tokens.refresh_token {
            data.insert("refresh_token".to_owned(), rt.clone());
        }
        data.insert("instance_url".to_owned(), tokens.instance_url.clone());
        data.insert("issued_at".to_owned(), tokens.issued_at.clone());
        self.put_secret(secret, org, data).await;
        tokens
    }

    /// Creates a Secret labelled as the org's token Secret.
    pub async fn put_secret(&self, name: &str, org: &str, data: BTreeMap<String, String>) {
        let body: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": org}},
            "stringData": data,
        }))
        .expect("secret body");
        self.secrets()
            .create(&PostParams::default(), &body)
            .await
            .expect("create secret");
    }

    /// Creates a Secret with raw bytes.
    pub async fn put_raw_secret(&self, name: &str, org: &str, data: BTreeMap<String, Vec<u8>>) {
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": org}},
        }))
        .expect("secret body");
        secret.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// A web server org for the demo app.
    pub async fn create_web_org(&self, name: &str) {
        self.ensure_app_secret().await;
        self.create_org(name, self.web_org(name).json()).await;
    }

    /// The spec of a web server org of the demo app, to adjust before creating it.
    pub fn web_org(&self, name: &str) -> OrgSpec {
        OrgSpec::web(name, &self.demo.app.client_id)
    }

    /// A web server org for the demo app whose `spec.dependents` is `dependents`.
    pub async fn create_web_org_with(&self, name: &str, dependents: serde_json::Value) {
        self.ensure_app_secret().await;
        let mut spec = self.web_org(name).json();
        spec["dependents"] = dependents;
        self.create_org(name, spec).await;
    }

    pub fn cronjobs(&self) -> Api<CronJob> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A backup CronJob with these labels.
    pub async fn create_cronjob(&self, name: &str, labels: &[(&str, &str)], suspended: bool) {
        let labels: BTreeMap<_, _> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"schedule": "0 2 * * *", "suspend": suspended, "startingDeadlineSeconds": 3600,
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "backup", "image": "example.com/backup:1"}]}}}}}
        }))
        .expect("cronjob");
        self.cronjobs()
            .create(&PostParams::default(), &cj)
            .await
            .expect("create cronjob");
    }

    /// A CronJob's `spec.suspend` and the orgs recorded as holding it.
    pub async fn cronjob_hold(&self, name: &str) -> (bool, Option<String>) {
        let cj = self.cronjobs().get(name).await.expect("get cronjob");
        (
            cj.spec.and_then(|s| s.suspend).unwrap_or(false),
            cj.metadata
                .annotations
                .and_then(|a| a.get(HOLDERS_ANNOTATION).cloned()),
        )
    }

    /// Stores freshly minted tokens in the org's Secret, as the re-auth callback does after a
    /// person logs in.
    pub async fn store_new_tokens(&self, org: &str) -> sforg_simulator::TokenResponse {
        let tokens = self
            .sim
            .control()
            .mint_tokens(&self.demo.app.client_id, &self.demo.user.username)
            .expect("mint");
        let patch = json!({"stringData": {"access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token, "instance_url": tokens.instance_url,
            "issued_at": tokens.issued_at}});
        self.secrets()
            .patch(
                &format!("{org}-token"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("store new tokens");
        tokens
    }

    /// Registers a JWT signing key for the demo app and user in the simulator, and stores its
    /// private key as the Secret `name` (key `tls.key`) for a jwtBearer org.
    pub async fn create_jwt_key(&self, name: &str) {
        let key = self
            .sim
            .control()
            .enable_jwt(&self.demo.app.client_id, &self.demo.user.username)
            .expect("jwt");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"tls.key": key.private_key_pem},
        }))
        .expect("secret");
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("jwt key");
    }

    /// Stores the demo app's consumer secret.
    pub async fn ensure_app_secret(&self) {
        let secret = self.demo.app.client_secret.clone().unwrap_or_default();
        let body: Secret = serde_json::from_value(json!({
            "metadata": {"name": "demo-app"},
            "stringData": {"client-secret": secret},
        }))
        .expect("secret body");
        let _ = self.secrets().create(&PostParams::default(), &body).await;
    }

    pub async fn create_org(&self, name: &str, spec: serde_json::Value) {
        let org: SalesforceOrg = serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("org body");
        self.orgs()
            .create(&PostParams::default(), &org)
            .await
            .expect("create org");
    }

    /// Asks for an immediate check, as `sforg-operator check NAME` does.
    pub async fn request_check(&self, name: &str) {
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: stamp}}});
        self.orgs()
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .expect("annotate");
    }

    /// Waits until the org reaches `state` (and, when given, the Ready reason).
    pub async fn wait_state(
        &self,
        name: &str,
        state: TokenState,
        reason: Option<&str>,
    ) -> SalesforceOrg {
        let orgs = self.orgs();
        eventually(
            &format!("{name} to be {state:?} {reason:?}"),
            CONVERGE,
            || {
                let orgs = orgs.clone();
                async move {
                    let org = orgs.get(name).await.ok()?;
                    let status = org.status.as_ref()?;
                    if status.state != Some(state) {
                        return None;
                    }
                    if let Some(want) = reason {
                        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                        if ready.reason != want {
                            return None;
                        }
                    }
                    Some(org.clone())
                }
            },
        )
        .await
    }

    /// Waits until CronJob `name` is (`want`) or is not suspended; returns it.
    pub async fn wait_suspended(&self, name: &str, want: bool) -> CronJob {
        eventually(&format!("{name} suspend={want}"), CONVERGE, || async {
            let cj = self.cronjobs().get(name).await.ok()?;
            let suspended = cj.spec.as_ref()?.suspend.unwrap_or(false);
            (suspended == want).then_some(cj)
        })
        .await
    }

    /// Current data of a Secret, as text.
    pub async fn secret_data(&self, name: &str) -> BTreeMap<String, String> {
        let secret = self.secrets().get(name).await.expect("get secret");
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    }

    /// Events about an org.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    pub fn resource_version(org: &SalesforceOrg) -> String {
        org.resource_version().unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(reauth) = &self.reauth {
            reauth.task.abort();
        }
    }
}

/// (status, reason, message) of one of an org's conditions.
pub fn condition(org: &SalesforceOrg, type_: &str) -> (String, String, String) {
    let c = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("condition {type_} present"));
    (
        c.status.to_string(),
        c.reason.to_string(),
        c.message.to_string(),
    )
}
