//! Set-up shared by the benchmarks: a client for the control plane `scripts/bench.sh` started,
//! and the CRD installed and Established.

// Each benchmark uses a part of this.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt};
use sforg_operator::crd::SalesforceOrg;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A client for the control plane named by SFORG_TEST_KUBECONFIG.
pub async fn client() -> BenchResult<Client> {
    let path = std::env::var("SFORG_TEST_KUBECONFIG").map_err(
        |_| "SFORG_TEST_KUBECONFIG is not set: run the benchmarks with scripts/bench.sh",
    )?;
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &KubeConfigOptions::default())
            .await?;
    Ok(Client::try_from(config)?)
}

/// Applies the generated CRD and waits until the API server serves it.
pub async fn install_crd(client: &Client) -> BenchResult<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SalesforceOrg::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let established = crds
            .get(&name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the CRD {name} was not Established within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every request the apiserver has served, by "VERB resource[/subresource]".
pub async fn requests(client: &Client) -> BenchResult<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(key).or_insert(0.0) += value;
    }
    Ok(out)
}

/// Write requests the apiserver has served, by "VERB resource[/subresource]".
pub async fn writes(client: &Client) -> BenchResult<BTreeMap<String, f64>> {
    Ok(requests(client)
        .await?
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.split(' ').next(),
                Some("POST" | "PUT" | "PATCH" | "DELETE" | "APPLY")
            )
        })
        .collect())
}

/// What grew between two [`writes`] readings.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}
