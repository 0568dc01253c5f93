//! Checked-in CRD YAML must match what the Rust types generate: `crds/` and the chart's CRD
//! template. `SFORG_UPDATE_MANIFESTS=1 cargo test --test manifests` rewrites them.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sforg_operator::manifests::{CHART_CRD_TEMPLATE, chart_crd_template, crd_yaml};

#[test]
fn checked_in_crds_match_the_types() {
    let files = [
        ("crds/salesforceorgs.orgtokens.dev.yaml", crd_yaml()),
        (CHART_CRD_TEMPLATE, chart_crd_template()),
    ];
    let update = std::env::var_os("SFORG_UPDATE_MANIFESTS").is_some();
    for (file, want) in files {
        let want = want.expect("render");
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        if update {
            std::fs::write(&path, &want).expect("write");
            continue;
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{file} is out of date with src/crd.rs; regenerate it with: \
             SFORG_UPDATE_MANIFESTS=1 cargo test --test manifests"
        );
    }
}

#[test]
fn the_chart_has_no_crds_directory() {
    // Helm installs crds/ once and never upgrades it; the chart ships the CRD as a template.
    let dir = format!("{}/charts/sforg-operator/crds", env!("CARGO_MANIFEST_DIR"));
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} must not exist: the CRD lives in {CHART_CRD_TEMPLATE}"
    );
}
