//! `sforg-backup-job`: what a scheduled Salesforce backup does with the token Secret the
//! operator keeps. It reads `access_token` and `instance_url` (files in a mounted Secret, or
//! environment variables), runs a SOQL query against the org's REST API and prints what it
//! read. A refused token (401 `INVALID_SESSION_ID`) fails the run, as a real backup fails.
//!
//! Environment:
//! - `TOKEN_DIR`: the mounted token Secret (default `/var/run/secrets/salesforce`); its
//!   files `access_token` and `instance_url` are read when the variables below are unset.
//! - `ACCESS_TOKEN`, `INSTANCE_URL`: the token and org URL directly (for example from
//!   `secretKeyRef`s).
//! - `SALESFORCE_CA_FILE`: extra CA certificates (PEM) to trust, for a TLS-inspecting proxy.
//! - `HTTPS_PROXY`: honoured as by any HTTP client.
//! - `SOQL`: the query (default `SELECT Id, Name FROM Account`).
//! - `BACKUP_WRITE_SECONDS`: how long writing the backup out takes after the query
//!   (default 0), to rehearse a long backup.
//!
//! Exit status: 0 backed up, 1 the token was refused, 2 any other failure.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const API_VERSION: &str = "v62.0";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(records) => {
            println!("backup: done, {records} records");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(body)) => {
            eprintln!("backup: Salesforce refused the token ({body}); the org needs a new login");
            ExitCode::from(1)
        }
        Err(Failure::Other(message)) => {
            eprintln!("backup: failed: {message}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    Refused(String),
    Other(String),
}

fn setting(name: &str, dir: &Path, file: &str) -> Result<String, Failure> {
    if let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(value.trim().to_owned());
    }
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_owned())
        .map_err(|e| {
            Failure::Other(format!(
                "neither {name} nor {} is readable: {e}",
                path.display()
            ))
        })
}

async fn run() -> Result<u64, Failure> {
    let dir = std::env::var("TOKEN_DIR").unwrap_or_else(|_| "/var/run/secrets/salesforce".into());
    let dir = Path::new(&dir);
    let token = setting("ACCESS_TOKEN", dir, "access_token")?;
    let instance = setting("INSTANCE_URL", dir, "instance_url")?;
    let soql = std::env::var("SOQL").unwrap_or_else(|_| "SELECT Id, Name FROM Account".into());

    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Ok(path) = std::env::var("SALESFORCE_CA_FILE") {
        let pem = std::fs::read(&path).map_err(|e| Failure::Other(format!("{path}: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Failure::Other(format!("{path}: {e}")))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| Failure::Other(e.to_string()))?;

    // Never print the token: only the org's URL and what came back.
    println!("backup: querying {instance} ({soql})");
    let url = format!(
        "{}/services/data/{API_VERSION}/query",
        instance.trim_end_matches('/')
    );
    let response = client
        .get(&url)
        .query(&[("q", soql.as_str())])
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| Failure::Other(format!("{url}: {e}")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Failure::Refused(body));
    }
    if !status.is_success() {
        return Err(Failure::Other(format!("{url}: HTTP {status}: {body}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| Failure::Other(format!("{url}: {e}")))?;
    let records = json["records"].as_array().cloned().unwrap_or_default();
    for record in &records {
        println!(
            "backup: {} {} {}",
            record["attributes"]["type"].as_str().unwrap_or("?"),
            record["Id"].as_str().unwrap_or("?"),
            record["Name"].as_str().unwrap_or("?")
        );
    }
    let write = std::env::var("BACKUP_WRITE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    if write > 0 {
        println!("backup: writing the backup out ({write}s)");
        tokio::time::sleep(Duration::from_secs(write)).await;
    }
    Ok(json["totalSize"].as_u64().unwrap_or(records.len() as u64))
}
