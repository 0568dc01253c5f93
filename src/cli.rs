//! The people-facing subcommands: `status`, `reauth NAME`, `check NAME` and
//! `check-setup NAME`.
//!
//! They behave like kubectl plugins: the current KUBECONFIG and context, `-n/--namespace`
//! (default: the context's namespace), `-A/--all-namespaces`. Everything they show comes from
//! the SalesforceOrg's status and Events, so they need only read access (and `patch` on
//! SalesforceOrgs for `check`). Rendering is kept in pure functions for tests.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config, ResourceExt};
use serde_json::json;

use crate::conditions;
use crate::crd::{AuthFlow, SalesforceOrg, SalesforceOrgStatus, SecretKeyRef, TokenState};
use crate::reconcile::{CHECK_ANNOTATION, CHECKED_EVENT};
use crate::salesforce::allowlist::{DEFAULT_DOMAINS, HostAllowlist};
use crate::salesforce::{HttpSalesforce, HttpSettings};
use crate::secret::SecretString;
use crate::setup_check;
use crate::token_secret::{self, TokenFile};

/// The field manager of the CLI's writes.
pub const FIELD_MANAGER: &str = "sforg-operator-cli";

/// Which cluster and namespace.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The namespace (default: the current kubectl context's namespace).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
}

/// `status`.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "Examples:
  sforg-operator status                 # orgs in the current namespace
  sforg-operator status -n backups
  sforg-operator status -A              # every namespace
  watch sforg-operator status -A")]
pub struct StatusArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// List orgs in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// `reauth NAME`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  sforg-operator reauth acme-prod             # print the link
  sforg-operator reauth acme-prod --open      # open it in the browser
  sforg-operator reauth acme-prod -n backups")]
pub struct ReauthArgs {
    /// The SalesforceOrg.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Open the link in the default browser (xdg-open, or open on macOS).
    #[arg(long)]
    pub open: bool,
}

/// `check NAME`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  sforg-operator check acme-prod                   # ask, return at once
  sforg-operator check acme-prod --wait            # ask, then print the result
  sforg-operator check acme-prod --wait --timeout 2m -n backups

Same as: kubectl annotate sforg acme-prod --overwrite orgtokens.dev/check-requested-at=\"$(date -u +%FT%TZ)\"")]
pub struct CheckArgs {
    /// The SalesforceOrg.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Wait until the operator reports the check's result.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "wait")]
    pub timeout: Duration,
}

/// `check-setup NAME`.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Runs the org's OAuth flow once against Salesforce and prints a checklist: \
which setting or policy of the Connected App or External Client App to change when Salesforce \
refuses. JWT bearer and client credentials orgs get (and revoke) one access token; web server \
orgs are checked without touching their tokens (a login nobody completes, a made-up code and \
refresh token). Needs read access to the org and its Secrets. Exits 1 when something must change.

Examples:
  sforg-operator check-setup acme-prod
  sforg-operator check-setup acme-prod --public-url https://sforg.example.com
  sforg-operator check-setup acme-uat -n backups --salesforce-proxy http://proxy:3128"
)]
pub struct CheckSetupArgs {
    /// The SalesforceOrg.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The operator's --public-url, to check that URL/oauth/callback is the app's callback
    /// URL (default: taken from the org's re-auth link, when it has one).
    #[arg(long, env = "SFORG_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Also allow this login domain to receive credentials (as the operator's option).
    #[arg(long = "allowed-login-domain", value_name = "DOMAIN")]
    pub allowed_login_domains: Vec<String>,
    /// Send Salesforce traffic through this HTTPS proxy (as the operator's option).
    #[arg(long, env = "SFORG_SALESFORCE_PROXY", value_name = "URL")]
    pub salesforce_proxy: Option<String>,
    /// Also trust the CA certificates in this PEM file for Salesforce traffic.
    #[arg(long, env = "SFORG_EXTRA_CA_FILE", value_name = "PATH")]
    pub extra_ca_file: Option<PathBuf>,
    /// Total timeout of one Salesforce request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub salesforce_timeout: Duration,
}

/// Parses `30s`, `15m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 30s, 15m or 24h: {e}"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d.into())
}

/// What went wrong, said so that the user knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No usable kubeconfig.
    #[error(
        "cannot load the Kubernetes configuration ({0}); set KUBECONFIG or pick a context with --context"
    )]
    Config(String),
    /// The org does not exist.
    #[error(
        "SalesforceOrg {namespace}/{name} not found; list the orgs with: sforg-operator status -A"
    )]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The CRD is missing.
    #[error(
        "the SalesforceOrg CRD is not installed in this cluster; install it with: sforg-operator crd | kubectl apply --server-side -f -"
    )]
    NoCrd,
    /// RBAC refused.
    #[error(
        "not allowed: {0}; ask for read access to salesforceorgs.orgtokens.dev (and patch, for check)"
    )]
    Forbidden(String),
    /// Any other API failure.
    #[error("Kubernetes API request failed: {0}")]
    Api(kube::Error),
    /// `reauth` found no link, and why.
    #[error("{0}")]
    NoLink(String),
    /// `--open` failed.
    #[error("could not open a browser ({0}); open the link printed above by hand")]
    Open(String),
    /// `check --wait` ran out of time.
    #[error(
        "no check result for {org} within {timeout:?}; is the operator running and leading? Now: {now}"
    )]
    CheckTimeout {
        /// namespace/name.
        org: String,
        /// The wait.
        timeout: Duration,
        /// The current state line.
        now: String,
    },
    /// `check-setup` could not set up its Salesforce client.
    #[error("{0}")]
    Salesforce(String),
    /// `check-setup` found things to change (the checklist says which).
    #[error("{0} thing(s) to change; see the checklist above")]
    SetupProblems(usize),
}

fn api_error(e: kube::Error, namespace: &str, name: Option<&str>) -> CliError {
    match &e {
        // A missing object and a missing resource type are both 404; only the latter says
        // the server does not know the resource.
        kube::Error::Api(s) if s.code == 404 => match name {
            Some(name) if !s.message.contains("could not find the requested resource") => {
                CliError::NotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                }
            }
            _ => CliError::NoCrd,
        },
        kube::Error::Api(s) if s.code == 403 => CliError::Forbidden(s.message.clone()),
        _ => CliError::Api(e),
    }
}

/// A client for the current (or given) context and its default namespace.
pub async fn connect(kube: &KubeArgs) -> Result<(Client, String), CliError> {
    let config = match &kube.context {
        None => Config::infer()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
        Some(context) => Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(context.clone()),
            ..KubeConfigOptions::default()
        })
        .await
        .map_err(|e| CliError::Config(e.to_string()))?,
    };
    let namespace = kube
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| CliError::Config(e.to_string()))?;
    Ok((client, namespace))
}

fn state_text(status: Option<&SalesforceOrgStatus>) -> String {
    status
        .and_then(|s| s.state)
        .map_or_else(|| "-".to_owned(), |s| format!("{s:?}"))
}

fn ready_reason(status: Option<&SalesforceOrgStatus>) -> Option<&str> {
    status
        .and_then(|s| conditions::get(&s.conditions, conditions::READY))
        .map(|c| c.reason.as_ref())
}

/// The `status` table: NAMESPACE (with `all_namespaces`), NAME, TOKEN, ORG ID, USERNAME, HELD,
/// REASON, LINK; sorted by namespace and name.
pub fn status_table(orgs: &[SalesforceOrg], all_namespaces: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(orgs.len() + 1);
    let mut header = vec![
        "NAME", "TOKEN", "ORG ID", "USERNAME", "HELD", "REASON", "LINK",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(str::to_owned).collect());
    let mut sorted: Vec<&SalesforceOrg> = orgs.iter().collect();
    sorted.sort_by_key(|o| (o.namespace(), o.name_any()));
    let dash = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("-").to_owned();
    for org in sorted {
        let status = org.status.as_ref();
        let mut row = vec![
            org.name_any(),
            state_text(status),
            dash(status.and_then(|s| s.org_id.as_deref())),
            dash(status.and_then(|s| s.username.as_deref())),
            status
                .map_or(0, |s| s.suspended_cron_jobs.len())
                .to_string(),
            dash(ready_reason(status)),
            dash(
                status
                    .and_then(|s| s.reauth.as_ref())
                    .map(|r| r.url.as_str()),
            ),
        ];
        if all_namespaces {
            row.insert(0, org.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The re-auth link of an org, or why there is none.
pub fn reauth_link(org: &SalesforceOrg, now: Timestamp) -> Result<String, String> {
    let who = format!("{}/{}", org.namespace().unwrap_or_default(), org.name_any());
    let Some(status) = org.status.as_ref() else {
        return Err(format!(
            "{who} has no status yet: the operator has not looked at it (is it running?)"
        ));
    };
    let ready = conditions::get(&status.conditions, conditions::READY);
    let why = ready
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default();
    if let Some(link) = &status.reauth {
        if link.expires_at.0 <= now {
            return Err(format!(
                "{who}'s re-auth link expired at {}; the operator writes a fresh one shortly, \
                 try again in a minute",
                link.expires_at.0
            ));
        }
        return Ok(link.url.clone());
    }
    let headless = org.spec.auth.web_server.is_none();
    match status.state {
        Some(TokenState::Valid) => Err(format!(
            "{who} is Valid: Salesforce accepts its token, nobody needs to log in."
        )),
        _ if headless => Err(format!(
            "{who} authenticates without a person (JWT bearer or client credentials), so there \
             is no link to open. {why}"
        )),
        Some(TokenState::Unknown) => Err(format!(
            "{who} is Unknown, not Expired: a link is offered only when Salesforce refuses the \
             authorization. {why}"
        )),
        Some(TokenState::Expired) | Some(TokenState::Pending) | None => Err(format!(
            "{who} needs a person to log in, but the operator has published no link: it writes \
             one to status.reauth when it runs with --public-url (its OAuth callback). {why}"
        )),
    }
}

async fn get_org(client: &Client, namespace: &str, name: &str) -> Result<SalesforceOrg, CliError> {
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), namespace);
    api.get(name)
        .await
        .map_err(|e| api_error(e, namespace, Some(name)))
}

/// `sforg-operator status`.
pub async fn status(args: &StatusArgs) -> Result<(), CliError> {
    let (client, namespace) = connect(&args.kube).await?;
    let api: Api<SalesforceOrg> = if args.all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &namespace)
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, &namespace, None))?;
    if list.items.is_empty() {
        if args.all_namespaces {
            eprintln!("No SalesforceOrgs found.");
        } else {
            eprintln!("No SalesforceOrgs found in namespace {namespace}.");
        }
        return Ok(());
    }
    print!("{}", status_table(&list.items, args.all_namespaces));
    Ok(())
}

/// `sforg-operator reauth NAME`.
pub async fn reauth(args: &ReauthArgs) -> Result<(), CliError> {
    let (client, namespace) = connect(&args.kube).await?;
    let org = get_org(&client, &namespace, &args.name).await?;
    let url = reauth_link(&org, Timestamp::now()).map_err(CliError::NoLink)?;
    println!("{url}");
    if args.open {
        open_in_browser(&url)?;
    }
    Ok(())
}

pub fn open_in_browser(url: &str) -> Result<(), CliError> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let status = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| CliError::Open(format!("{opener}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::Open(format!("{opener} exited with {status}")))
    }
}

/// One line about an org's current state.
pub fn state_line(org: &SalesforceOrg) -> String {
    let status = org.status.as_ref();
    let ready = status.and_then(|s| conditions::get(&s.conditions, conditions::READY));
    match ready {
        Some(c) => format!(
            "{}/{} is {} ({}): {}",
            org.namespace().unwrap_or_default(),
            org.name_any(),
            state_text(status),
            c.reason,
            c.message
        ),
        None => format!(
            "{}/{} is {}",
            org.namespace().unwrap_or_default(),
            org.name_any(),
            state_text(status)
        ),
    }
}

/// What shows that a check ran: the status fields a check changes, and the "Checked" Events
/// (with their repeat counts) the operator publishes for a requested check.
#[derive(Debug, PartialEq, Eq)]
struct CheckMarks {
    status: (Option<String>, Option<String>, Option<String>),
    events: BTreeSet<(String, i32)>,
}

async fn marks(client: &Client, org: &SalesforceOrg) -> Result<CheckMarks, CliError> {
    let namespace = org.namespace().unwrap_or_default();
    let status = org.status.as_ref();
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let list = events
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, &namespace, None))?;
    let events = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(CHECKED_EVENT))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.uid.is_some() && r.uid == org.metadata.uid)
        })
        .map(|e| (e.name_any(), e.series.as_ref().map_or(1, |s| s.count)))
        .collect();
    Ok(CheckMarks {
        status: (
            status
                .and_then(|s| s.last_checked_at.as_ref())
                .map(|t| t.0.to_string()),
            status.and_then(|s| s.state).map(|s| format!("{s:?}")),
            ready_reason(status).map(str::to_owned),
        ),
        events,
    })
}

/// `sforg-operator check NAME`.
pub async fn check(args: &CheckArgs) -> Result<(), CliError> {
    let (client, namespace) = connect(&args.kube).await?;
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), &namespace);
    let org = get_org(&client, &namespace, &args.name).await?;
    let before = if args.wait {
        Some(marks(&client, &org).await?)
    } else {
        None
    };
    let stamp = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: stamp}}});
    api.patch(
        &args.name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| api_error(e, &namespace, Some(&args.name)))?;
    println!(
        "asked for a check of {namespace}/{} ({CHECK_ANNOTATION}={stamp})",
        args.name
    );
    let Some(before) = before else {
        return Ok(());
    };
    let status = org.status.as_ref();
    if org.spec.auth.web_server.is_some()
        && status.and_then(|s| s.state).unwrap_or_default() == TokenState::Pending
    {
        println!(
            "{namespace}/{} is Pending: there is nothing to check until a person logs in \
             (sforg-operator reauth {})",
            args.name, args.name
        );
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = get_org(&client, &namespace, &args.name).await?;
        if marks(&client, &now).await? != before {
            println!("{}", state_line(&now));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::CheckTimeout {
                org: format!("{namespace}/{}", args.name),
                timeout: args.timeout,
                now: state_line(&now),
            });
        }
    }
}

/// One key of a Secret in `namespace`, or why it cannot be read (never its value).
async fn secret_value(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<SecretString, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(&r.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(format!(
                "Secret {} does not exist: kubectl create secret generic {} --from-literal={}=...",
                r.name, r.name, r.key
            ));
        }
        Err(e) => return Err(format!("cannot read Secret {}: {e}", r.name)),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .ok_or_else(|| format!("Secret {} has no key {}", r.name, r.key))?;
    match String::from_utf8(bytes) {
        Ok(s) if !s.trim().is_empty() => Ok(SecretString::new(s.trim().to_owned())),
        _ => Err(format!(
            "key {} of Secret {} is empty or not text",
            r.key, r.name
        )),
    }
}

/// The operator's public URL from a re-auth link (`<public>/reauth/<ns>/<name>?t=...`).
pub fn public_url_of_link(link: &str) -> Option<String> {
    link.split_once("/reauth/").map(|(base, _)| base.to_owned())
}

/// The Salesforce client `check-setup` talks through: the operator's proxy, CA and domains.
fn check_setup_client(args: &CheckSetupArgs) -> Result<HttpSalesforce, CliError> {
    let extra_ca_pem = crate::salesforce::client::read_extra_ca(args.extra_ca_file.as_deref())
        .map_err(CliError::Salesforce)?;
    let settings = HttpSettings {
        proxy: args.salesforce_proxy.clone(),
        extra_ca_pem,
        timeout: args.salesforce_timeout,
        allowlist: HostAllowlist::new(
            DEFAULT_DOMAINS
                .iter()
                .map(|d| d.to_string())
                .chain(args.allowed_login_domains.iter().cloned()),
        ),
        ..HttpSettings::default()
    };
    HttpSalesforce::new(settings).map_err(|e| CliError::Salesforce(e.to_string()))
}

/// `sforg-operator check-setup NAME`.
pub async fn check_setup(args: &CheckSetupArgs) -> Result<(), CliError> {
    let (client, namespace) = connect(&args.kube).await?;
    let org = get_org(&client, &namespace, &args.name).await?;
    let flow = org
        .spec
        .auth
        .flow()
        .map_err(|e| CliError::Salesforce(e.to_string()))?;
    let credential_ref = match &flow {
        AuthFlow::WebServer(w) => w.client_secret_ref.clone(),
        AuthFlow::JwtBearer(j) => Some(j.private_key_ref.clone()),
        AuthFlow::ClientCredentials(c) => Some(c.client_secret_ref.clone()),
    };
    let credential = match &credential_ref {
        Some(r) => Some(secret_value(&client, &namespace, r).await),
        None => None,
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let token_secret = secrets
        .get_opt(&org.spec.token_secret_ref.name)
        .await
        .map_err(|e| api_error(e, &namespace, None))?;
    let stored = match token_secret::read(token_secret.as_ref()) {
        TokenFile::Present(t) => t.access_token.zip(t.instance_url),
        TokenFile::Missing | TokenFile::Malformed(_) => None,
    };
    let status = org.status.as_ref();
    let public_url = args.public_url.clone().or_else(|| {
        status
            .and_then(|s| s.reauth.as_ref())
            .and_then(|r| public_url_of_link(&r.url))
    });
    let salesforce = check_setup_client(args)?;
    let inputs = setup_check::Inputs {
        org: format!("{namespace}/{}", args.name),
        login_url: org.spec.login_url.clone(),
        flow,
        credential,
        stored,
        callback_url: public_url.map(|u| {
            format!(
                "{}{}",
                u.trim_end_matches('/'),
                crate::callback::CALLBACK_PATH
            )
        }),
        pinned_org: org
            .spec
            .expected_org_id
            .clone()
            .or_else(|| status.and_then(|s| s.org_id.clone())),
        verdict: status
            .and_then(|s| conditions::get(&s.conditions, conditions::READY))
            .map(|c| (c.reason.to_string(), c.message.to_string())),
    };
    let checklist = setup_check::run(&salesforce, &inputs).await;
    print!("{}", checklist.render());
    match checklist.failures() {
        0 => Ok(()),
        n => Err(CliError::SetupProblems(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Condition;
    use crate::crd::ReauthLink;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn org(ns: &str, name: &str, status: Option<SalesforceOrgStatus>, web: bool) -> SalesforceOrg {
        let auth = if web {
            json!({"webServer": {"clientId": "x"}})
        } else {
            json!({"jwtBearer": {"clientId": "x", "username": "a@b.c",
                "privateKeyRef": {"name": "k", "key": "tls.key"}}})
        };
        let mut org: SalesforceOrg = serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"loginUrl": "https://login.salesforce.com", "auth": auth,
                "tokenSecretRef": {"name": "t"}}
        }))
        .unwrap();
        org.status = status;
        org
    }

    fn ready(reason: &str) -> Condition {
        Condition {
            type_: conditions::READY.into(),
            status: "False".into(),
            reason: reason.to_owned().into(),
            message: "do something".into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn expired(link: Option<&str>) -> SalesforceOrgStatus {
        SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            org_id: Some("00D000000000001AAA".into()),
            username: Some("backup@acme.com".into()),
            conditions: vec![ready("RefreshTokenRevoked")],
            suspended_cron_jobs: vec!["nightly".into()],
            reauth: link.map(|url| ReauthLink {
                url: url.into(),
                expires_at: Time(Timestamp::from_second(4_000_000_000).unwrap()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn table_lists_orgs_like_an_organizations_page() {
        let orgs = vec![
            org("b", "zeta", None, true),
            org(
                "a",
                "acme",
                Some(expired(Some("https://op.example/r/1"))),
                true,
            ),
        ];
        let table = status_table(&orgs, true);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAMESPACE   NAME   TOKEN"), "{table}");
        assert!(lines[0].ends_with("REASON                LINK"), "{table}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "a",
                "acme",
                "Expired",
                "00D000000000001AAA",
                "backup@acme.com",
                "1",
                "RefreshTokenRevoked",
                "https://op.example/r/1"
            ]
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, ["b", "zeta", "-", "-", "-", "0", "-", "-"]);
        assert!(!status_table(&orgs, false).contains("NAMESPACE"));
    }

    #[test]
    fn public_url_comes_from_the_reauth_link() {
        assert_eq!(
            public_url_of_link("https://sforg.example.com/reauth/backups/acme?t=abc").as_deref(),
            Some("https://sforg.example.com")
        );
        assert_eq!(
            public_url_of_link("http://127.0.0.1:8080/reauth/ns/x?t=1").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(public_url_of_link("https://elsewhere.example/x"), None);
    }

    #[test]
    fn reauth_explains_a_missing_link() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let with = org(
            "a",
            "acme",
            Some(expired(Some("https://op.example/r/1"))),
            true,
        );
        assert_eq!(reauth_link(&with, now).unwrap(), "https://op.example/r/1");
        let without = org("a", "acme", Some(expired(None)), true);
        let why = reauth_link(&without, now).unwrap_err();
        assert!(
            why.contains("--public-url") && why.contains("RefreshTokenRevoked"),
            "{why}"
        );
        let jwt = org("a", "jwt", Some(expired(None)), false);
        assert!(
            reauth_link(&jwt, now)
                .unwrap_err()
                .contains("without a person")
        );
        let valid = SalesforceOrgStatus {
            state: Some(TokenState::Valid),
            ..Default::default()
        };
        let ok = org("a", "ok", Some(valid), true);
        assert!(reauth_link(&ok, now).unwrap_err().contains("is Valid"));
        let late = Timestamp::from_second(4_000_000_001).unwrap();
        assert!(reauth_link(&with, late).unwrap_err().contains("expired"));
        assert!(
            reauth_link(&org("a", "new", None, true), now)
                .unwrap_err()
                .contains("no status")
        );
    }
}
