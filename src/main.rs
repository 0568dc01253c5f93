//! The `sforg-operator` command: wiring only; behaviour lives in the library modules.

use std::sync::Arc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sforg_operator::callback;
use sforg_operator::cli;
use sforg_operator::controller::{self, Hooks, Scope};
use sforg_operator::leader::{self, Elector, LeaseConfig};
use sforg_operator::metrics::{Instrumented, Metrics};
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::allowlist::HostAllowlist;
use sforg_operator::salesforce::{HttpSalesforce, HttpSettings};
use sforg_operator::telemetry::{self, Health, LogFormat};
use sforg_operator::{dashboard, notify, plugin};

/// Keeps Salesforce org connections alive in Kubernetes.
///
/// Reconciles SalesforceOrg resources: keeps their OAuth tokens in Secrets, validates them
/// against Salesforce, reports TokenValid / TokenExpired, and pauses dependent backup CronJobs
/// while a person has to log in again.
#[derive(Parser, Debug)]
#[command(name = "sforg-operator", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (uses the in-cluster config, or KUBECONFIG outside a cluster).
    ///
    /// Examples:
    ///   sforg-operator run
    ///   sforg-operator run --namespace backups --allowed-login-domain acme-login.example.com
    Run(Box<RunArgs>),
    /// Print the SalesforceOrg CustomResourceDefinition as YAML.
    ///
    /// Example: sforg-operator crd | kubectl apply --server-side -f -
    Crd,
    /// Show the SalesforceOrgs as a table: token state, org, user, CronJobs held, reason and
    /// re-auth link (uses KUBECONFIG and the current context, like kubectl).
    Status(cli::StatusArgs),
    /// Print the link a person opens to log into Salesforce again for an org, or say why
    /// there is none.
    Reauth(cli::ReauthArgs),
    /// Ask the operator to check an org against Salesforce now, and optionally wait for the
    /// result.
    Check(cli::CheckArgs),
    /// Open the Organizations page in a browser: live token states, Update Token, Check now
    /// and details, with your own kubeconfig and RBAC (like kubectl: --context, -n, -A).
    Dashboard(dashboard::DashboardArgs),
    /// Run an org's OAuth flow once against Salesforce and print a checklist of what to
    /// change in the Connected App or External Client App (settings and policies) or in the
    /// SalesforceOrg when Salesforce refuses. Exits 1 when something must change.
    CheckSetup(cli::CheckSetupArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (namespaced mode); repeat it, or separate with commas, for
    /// several (each watched on its own, so a Role in each is enough). All namespaces when
    /// unset.
    #[arg(
        long,
        env = "SFORG_NAMESPACE",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    namespace: Vec<String>,

    /// Also allow this login domain (and its subdomains) to receive credentials, for orgs
    /// behind a custom domain. Salesforce's own domains are always allowed. Repeatable. A
    /// public suffix (com, co.uk, herokuapp.com...), a URL, a wildcard or an IP address is
    /// refused at start.
    #[arg(long = "allowed-login-domain", value_name = "DOMAIN")]
    allowed_login_domains: Vec<String>,

    /// Also allow this port in login and instance URLs (only 443 otherwise, as Salesforce
    /// serves), for a custom domain served elsewhere. Repeatable.
    #[arg(long = "allowed-login-port", value_name = "PORT")]
    allowed_login_ports: Vec<u16>,

    /// Send Salesforce traffic (only) through this HTTPS proxy, for example
    /// http://proxy.internal:3128.
    #[arg(long, env = "SFORG_SALESFORCE_PROXY", value_name = "URL")]
    salesforce_proxy: Option<String>,

    /// Also trust the CA certificates in this PEM file for Salesforce traffic (a TLS-inspecting
    /// proxy, or the local Salesforce simulator).
    #[arg(long, env = "SFORG_EXTRA_CA_FILE", value_name = "PATH")]
    extra_ca_file: Option<PathBuf>,

    /// Exercise each refresh token at least this often, so an "expire if unused" policy never
    /// kills it while backups are paused (for example 24h).
    #[arg(long, default_value = "24h", value_parser = cli::parse_duration)]
    refresh_keepalive: Duration,

    /// How long before an authorization expires by its refresh token policy (the org's
    /// spec.refreshTokenPolicy) the TokenExpiringSoon condition turns True with a re-auth
    /// link ready, then moves to each shorter lead time (status.expiryLeadTime): a comma
    /// separated list of days, hours, minutes or seconds, for example 7d,2d or 14d,3d,12h.
    #[arg(long, default_value = "7d,2d", value_parser = parse_lead_times, value_name = "LIST")]
    expiry_lead_times: LeadTimes,

    /// Total timeout of one Salesforce request.
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    salesforce_timeout: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "SFORG_LOG_FORMAT")]
    log_format: LogFormat,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address. 127.0.0.1:9090
    /// keeps the per-org metrics (namespaces, names, states) inside the pod, for a
    /// kube-rbac-proxy sidecar or an agent in the pod; then give --health-listen for the
    /// kubelet's probes.
    #[arg(
        long,
        default_value = "0.0.0.0:9090",
        env = "SFORG_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    metrics_listen: SocketAddr,

    /// Also serve /healthz and /readyz (only) on this address, for example 0.0.0.0:9091 when
    /// /metrics listens on loopback.
    #[arg(long, env = "SFORG_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<SocketAddr>,

    /// Run the controller without leader election: only for a single replica or local
    /// development, never with two replicas.
    #[arg(long)]
    no_leader_election: bool,

    /// The Lease that elects the one replica that reconciles.
    #[arg(long, default_value = leader::DEFAULT_LEASE_NAME, value_name = "NAME")]
    lease_name: String,

    /// The Lease's namespace (default: the pod's namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    lease_namespace: Option<String>,

    /// How long a leader's claim lasts without renewal: a standby takes over this long after
    /// the leader dies.
    #[arg(long, default_value = "15s", value_parser = cli::parse_duration)]
    lease_duration: Duration,

    /// How often the leader renews its claim (at most half the lease duration).
    #[arg(long, default_value = "5s", value_parser = cli::parse_duration)]
    lease_renew_interval: Duration,

    /// The base URL at which browsers reach the re-auth server, for example
    /// https://sforg.example.com (the chart sets it from its Ingress host). Re-auth links are
    /// written to status only when it is set; the callback URL of the Connected App or
    /// External Client App must be URL/oauth/callback.
    #[arg(long, env = "SFORG_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,

    /// Serve re-auth links and the OAuth callback on this address (with --public-url). Every
    /// replica serves them, leader or not.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "SFORG_CALLBACK_LISTEN",
        value_name = "ADDR"
    )]
    callback_listen: SocketAddr,

    /// The Secret with the key that signs re-auth links and OAuth states, created when missing
    /// [default: sforg-operator-state-key in the operator's namespace].
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_secret_ref)]
    state_key_secret: Option<(Option<String>, String)>,

    /// Revoke the refresh token that a re-auth replaces; --revoke-superseded-tokens=false keeps
    /// it valid.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set)]
    revoke_superseded_tokens: bool,

    /// The Secret whose key channels.yaml defines the notification channels (webhooks and
    /// mail servers, by name; see the README). Watched: a change applies without a restart,
    /// an invalid version keeps the last good channels and logs which field is wrong.
    /// Notifications are off when unset.
    #[arg(long, env = "SFORG_NOTIFICATION_CHANNELS_SECRET", value_name = "NAMESPACE/NAME", value_parser = parse_secret_ref)]
    notification_channels_secret: Option<(Option<String>, String)>,

    /// Channels for orgs whose spec.notifications names none. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "CHANNEL")]
    notification_default_channels: Vec<String>,

    /// Email recipients (spec.notifications.recipients) must be in this domain or a
    /// subdomain; others are listed in the org's status.refusedRecipients and get nothing.
    /// Repeatable or comma-separated. No recipient is allowed when unset.
    #[arg(long, value_delimiter = ',', value_name = "DOMAIN")]
    notification_recipient_domains: Vec<String>,

    /// Time between reminders while an org stays expired.
    #[arg(long, default_value = "24h", value_parser = cli::parse_duration)]
    notification_reminder_interval: Duration,

    /// Reminders per expiry, at most (0: only the Expired notification).
    #[arg(long, default_value_t = 3)]
    notification_reminder_max: u32,

    /// Notifications delivered at the same time, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    notification_concurrency: u16,

    /// Attempts per notification and channel before it is marked Failed (with a Warning
    /// Event on the org).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    notification_attempts: u32,

    /// The wait after a failed delivery attempt, doubled after each (at most 1m).
    #[arg(long, default_value = "2s", value_parser = cli::parse_duration)]
    notification_retry_backoff: Duration,
}

/// The parsed `--expiry-lead-times`, longest first.
#[derive(Clone, Debug)]
struct LeadTimes(Vec<Duration>);

fn parse_lead_times(s: &str) -> Result<LeadTimes, String> {
    sforg_operator::duration::parse_list(s)
        .map(LeadTimes)
        .map_err(|e| e.to_string())
}

/// `NAMESPACE/NAME`, or `NAME` in the operator's namespace.
fn parse_secret_ref(s: &str) -> Result<(Option<String>, String), String> {
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    match s.split_once('/') {
        Some((ns, name)) if valid(ns) && valid(name) => Ok((Some(ns.to_owned()), name.to_owned())),
        None if valid(s) => Ok((None, s.to_owned())),
        _ => Err(format!(
            "{s:?} is not NAMESPACE/NAME of a Secret, for example sforg-system/sforg-operator-state-key"
        )),
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_format);
    let allowlist = HostAllowlist::from_admin(&args.allowed_login_domains)
        .map_err(|e| e.to_string())?
        .with_ports(args.allowed_login_ports.iter().copied());
    let http = http_settings(&args, &allowlist)?;
    let metrics = Metrics::new();
    let health = Health::default();
    serve_telemetry(&args, &metrics, &health).await?;
    let salesforce = Instrumented::new(
        HttpSalesforce::new(http.clone()).map_err(|e| e.to_string())?,
        metrics.clone(),
    );
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}")
    })?;
    let reauth = serve_callback(&args, &client, &http, &metrics, &allowlist).await?;
    let notify = notifications(&args, &client, &metrics);
    let settings = Settings {
        keepalive: args.refresh_keepalive,
        expiry_lead_times: args.expiry_lead_times.0.clone(),
        allowlist,
        reauth,
        notify,
        ..Settings::default()
    };
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "sforg-operator".into());
    let scope = Scope {
        namespaces: args.namespace.clone(),
    };
    tracing::info!(namespaces = ?scope.namespaces, domains = ?settings.allowlist.domains(), metrics = %args.metrics_listen, "starting");
    let hooks = Hooks {
        metrics: Some(metrics.clone()),
        health: Some(health.clone()),
    };
    if args.no_leader_election {
        metrics.set_leader(true);
        controller::run_with(
            client,
            salesforce,
            settings,
            scope,
            instance,
            shutdown_signal(),
            hooks,
        )
        .await;
    } else {
        let elector = elector(&args, &instance, &metrics, &health).await?;
        elector
            .run(shutdown_signal(), |stop| {
                controller::run_with(
                    client.clone(),
                    salesforce.clone(),
                    settings.clone(),
                    scope.clone(),
                    instance.clone(),
                    stop,
                    hooks.clone(),
                )
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The notifier, when a channels Secret is configured, with the watch that keeps its
/// channels current (on every replica, so a new leader starts with them).
fn notifications(
    args: &RunArgs,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
) -> Option<notify::Notifier> {
    let Some((namespace, name)) = &args.notification_channels_secret else {
        tracing::info!("no --notification-channels-secret: notifications are off");
        return None;
    };
    let namespace = namespace
        .clone()
        .or_else(|| args.lease_namespace.clone())
        .unwrap_or_else(|| "default".into());
    let store = notify::config::Store::default();
    let api = kube::Api::namespaced(client.clone(), &namespace);
    tokio::spawn(notify::config::watch(
        api,
        name.clone(),
        store.clone(),
        Some(metrics.clone()),
    ));
    let settings = notify::Settings {
        default_channels: args.notification_default_channels.clone(),
        recipient_domains: args.notification_recipient_domains.clone(),
        reminder_interval: args.notification_reminder_interval,
        reminder_max: args.notification_reminder_max,
        concurrency: usize::from(args.notification_concurrency),
        attempts: args.notification_attempts,
        retry_first: args.notification_retry_backoff,
    };
    tracing::info!(secret = %format!("{namespace}/{name}"), defaults = ?settings.default_channels, "notifications on");
    Some(notify::Notifier::new(settings, store))
}

/// How the operator reaches Salesforce.
fn http_settings(args: &RunArgs, allowlist: &HostAllowlist) -> Result<HttpSettings, String> {
    let extra_ca_pem =
        sforg_operator::salesforce::client::read_extra_ca(args.extra_ca_file.as_deref())?;
    Ok(HttpSettings {
        proxy: args.salesforce_proxy.clone(),
        extra_ca_pem,
        timeout: args.salesforce_timeout,
        allowlist: allowlist.clone(),
        ..HttpSettings::default()
    })
}

/// Metrics and health on `--metrics-listen`, and health alone on `--health-listen` when set.
async fn serve_telemetry(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    health: &Health,
) -> Result<(), String> {
    let listener = telemetry::bind(args.metrics_listen)
        .await
        .map_err(|e| e.to_string())?;
    let router = telemetry::router(metrics.clone(), health.clone());
    telemetry::spawn(listener, router, std::future::pending()).map_err(|e| e.to_string())?;
    if let Some(addr) = args.health_listen {
        let listener = telemetry::bind(addr).await.map_err(|e| e.to_string())?;
        let router = telemetry::health_router(health.clone());
        telemetry::spawn(listener, router, std::future::pending()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The re-auth callback server, when the operator has a public URL; the links it serves.
async fn serve_callback(
    args: &RunArgs,
    client: &kube::Client,
    http: &HttpSettings,
    metrics: &Arc<Metrics>,
    allowlist: &HostAllowlist,
) -> Result<Option<callback::Links>, String> {
    let Some(url) = &args.public_url else {
        tracing::info!("no --public-url: re-auth links are not written to status");
        return Ok(None);
    };
    let options = callback::ServerOptions {
        public_url: url.clone(),
        listen: args.callback_listen,
        key_secret: args
            .state_key_secret
            .clone()
            .unwrap_or((None, callback::DEFAULT_KEY_SECRET.to_owned())),
        revoke_superseded: args.revoke_superseded_tokens,
    };
    // The callback gets its own Salesforce client: its connections are driven by the callback
    // server's runtime, which a flood of requests may keep busy.
    let salesforce = Instrumented::new(
        HttpSalesforce::new(http.clone()).map_err(|e| e.to_string())?,
        metrics.clone(),
    );
    let links = callback::spawn(
        client,
        salesforce,
        allowlist.clone(),
        options,
        sforg_operator::clock::Clock::system(),
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Some(links))
}

/// The leader elector on the configured Lease.
async fn elector(
    args: &RunArgs,
    instance: &str,
    metrics: &Arc<Metrics>,
    health: &Health,
) -> Result<Elector, String> {
    let config = LeaseConfig {
        lease_duration: args.lease_duration,
        renew_interval: args.lease_renew_interval,
        ..LeaseConfig::new(
            args.lease_name.clone(),
            args.lease_namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            // Unique even for two processes on one host without POD_NAME.
            format!("{instance}_{}", std::process::id()),
        )
    };
    // The lease gets its own client (its own connections), so a busy controller can never
    // delay a renewal long enough to lose leadership.
    let lease_client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API for the leader lease: {e}"))?;
    Ok(Elector::new(lease_client, config)
        .map_err(|e| e.to_string())?
        .with_metrics(metrics.clone())
        .with_health(health.clone()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut command = Cli::command();
    if plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        command = command
            .name(plugin::PLUGIN_EXECUTABLE)
            .bin_name(plugin::PLUGIN_COMMAND);
    }
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Crd => sforg_operator::manifests::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
        Command::Run(args) => run(*args).await,
        Command::Status(args) => cli::status(&args).await.map_err(|e| e.to_string()),
        Command::Reauth(args) => cli::reauth(&args).await.map_err(|e| e.to_string()),
        Command::Check(args) => cli::check(&args).await.map_err(|e| e.to_string()),
        Command::Dashboard(args) => dashboard::run(&args, shutdown_signal())
            .await
            .map_err(|e| e.to_string()),
        Command::CheckSetup(args) => cli::check_setup(&args).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
