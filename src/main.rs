//! The `sforg-operator` command: wiring only; behaviour lives in the library modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Print the SalesforceOrg CustomResourceDefinition as YAML.
    ///
    /// Example: sforg-operator crd | kubectl apply --server-side -f -
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match sforg_operator::manifests::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
