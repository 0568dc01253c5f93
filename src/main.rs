//! The `sforg-operator` command: wiring only; behaviour lives in the library modules.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sforg_operator::controller::{self, Scope};
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::allowlist::{DEFAULT_DOMAINS, HostAllowlist};
use sforg_operator::salesforce::{HttpSalesforce, HttpSettings};
use sforg_operator::telemetry::{self, LogFormat};

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
    Run(RunArgs),
    /// Print the SalesforceOrg CustomResourceDefinition as YAML.
    ///
    /// Example: sforg-operator crd | kubectl apply --server-side -f -
    Crd,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (namespaced mode); all namespaces when unset.
    #[arg(long, env = "SFORG_NAMESPACE")]
    namespace: Option<String>,

    /// Also allow this login domain (and its subdomains) to receive credentials, for orgs
    /// behind a custom domain. Salesforce's own domains are always allowed. Repeatable.
    #[arg(long = "allowed-login-domain", value_name = "DOMAIN")]
    allowed_login_domains: Vec<String>,

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
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    refresh_keepalive: Duration,

    /// Total timeout of one Salesforce request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    salesforce_timeout: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "SFORG_LOG_FORMAT")]
    log_format: LogFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 30s, 15m or 24h: {e}"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d.into())
}

async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_format);
    let allowlist = HostAllowlist::new(
        DEFAULT_DOMAINS
            .iter()
            .map(|d| d.to_string())
            .chain(args.allowed_login_domains.iter().cloned()),
    );
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read --extra-ca-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let http = HttpSettings {
        proxy: args.salesforce_proxy.clone(),
        extra_ca_pem,
        timeout: args.salesforce_timeout,
        allowlist: allowlist.clone(),
        ..HttpSettings::default()
    };
    let salesforce = HttpSalesforce::new(http).map_err(|e| e.to_string())?;
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}")
    })?;
    let settings = Settings {
        keepalive: args.refresh_keepalive,
        allowlist,
    };
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "sforg-operator".into());
    let scope = Scope {
        namespace: args.namespace,
    };
    tracing::info!(namespace = ?scope.namespace, domains = ?settings.allowlist.domains(), "starting");
    controller::run(
        client,
        salesforce,
        settings,
        scope,
        instance,
        shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => sforg_operator::manifests::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
        Command::Run(args) => run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
