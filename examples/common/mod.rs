//! Set-up shared by the benchmarks: a client for the control plane `scripts/bench.sh` started,
//! and the CRD installed and Established.

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
