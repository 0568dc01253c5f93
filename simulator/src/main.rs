//! `sforg-simulator`: runs the Salesforce OAuth simulator as its own process for the
//! local demo and for scripts, printing where it listens as one JSON line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use sforg_simulator::{DemoOptions, DemoSeed, ReadyInfo, SimConfig, Simulator};
use tracing_subscriber::EnvFilter;

/// Salesforce OAuth 2.0 simulator (test and demo use only).
///
/// Answers as login.salesforce.com, test.salesforce.com and every *.my.salesforce.com host.
/// Point an HTTP client at it by using PROXY_URL as its HTTPS proxy and trusting the CA
/// (see --ca-out); the same endpoints are also served over plain HTTP on the http port,
/// and the control API (JSON, routes under /_sim/) on the control port. All listeners
/// bind 127.0.0.1.
///
/// Once ready, one JSON line is printed on stdout:
/// {"proxy_url":..,"proxy_port":..,"https_port":..,"http_port":..,"http_url":..,
/// "control_port":..,"control_url":..,"ca_pem_path":..,"demo":..}.
/// Logs go to stderr (RUST_LOG filters them). SIGTERM or SIGINT stops it cleanly.
#[derive(Debug, Parser)]
#[command(name = "sforg-simulator", version, about, long_about)]
struct Cli {
    /// Port of the HTTP CONNECT proxy (0 = random).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    proxy_port: u16,
    /// Port of the TLS listener the proxy tunnels to (0 = random).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    https_port: u16,
    /// Port of the plain HTTP listener serving the same endpoints (0 = random).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    http_port: u16,
    /// Port of the control API, routes under /_sim/ (0 = random).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    control_port: u16,
    /// Write the CA certificate (PEM) to this file once ready.
    #[arg(long, value_name = "PATH")]
    ca_out: Option<PathBuf>,
    /// Create the demo org "acme", sandbox "acme--uat", their admin users and the
    /// connected app "sforg-operator"; the credentials are in the ready line ("demo").
    #[arg(long)]
    seed_demo: bool,
    /// Callback URL of the demo app (repeatable; replaces the defaults).
    #[arg(long = "demo-redirect-uri", value_name = "URL", requires = "seed_demo")]
    demo_redirect_uris: Vec<String>,
    /// Turn refresh token rotation off on the demo app (on by default).
    #[arg(long, requires = "seed_demo")]
    demo_no_rotation: bool,
}

#[derive(Serialize)]
struct ReadyLine<'a> {
    #[serde(flatten)]
    info: &'a ReadyInfo,
    ca_pem_path: Option<String>,
    demo: Option<DemoSeed>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "simulator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start_with(SimConfig {
        proxy_port: cli.proxy_port,
        https_port: cli.https_port,
        http_port: cli.http_port,
        control_port: Some(cli.control_port),
    })
    .await?;
    if let Some(path) = &cli.ca_out {
        sim.write_ca_pem(path)?;
    }
    let demo = if cli.seed_demo {
        let mut options = DemoOptions::default();
        if !cli.demo_redirect_uris.is_empty() {
            options.redirect_uris = cli.demo_redirect_uris.clone();
        }
        options.rotation = !cli.demo_no_rotation;
        let seed = sim.seed_demo_with(options)?;
        eprintln!(
            "demo: org {} ({}), sandbox {} ({}), users {} / {} password {}, app {} client_id {}",
            seed.org.label,
            seed.org.id,
            seed.sandbox.label,
            seed.sandbox.id,
            seed.user.username,
            seed.sandbox_user.username,
            seed.password,
            seed.app.name,
            seed.app.client_id
        );
        Some(seed)
    } else {
        None
    };
    let line = ReadyLine {
        info: sim.ready_info(),
        ca_pem_path: cli.ca_out.as_ref().map(|p| p.display().to_string()),
        demo,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
    stdout.flush()?;
    drop(stdout);

    wait_for_signal().await?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
