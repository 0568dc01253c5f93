//! Checked-in CRD YAML must match what the Rust types generate.

const FILES: &[&str] = &[
    "crds/salesforceorgs.orgtokens.dev.yaml",
    "charts/sforg-operator/crds/salesforceorgs.orgtokens.dev.yaml",
];

#[test]
fn checked_in_crds_match_the_types() {
    let want = sforg_operator::manifests::crd_yaml().expect("render");
    for file in FILES {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{file} is out of date with src/crd.rs; regenerate it with: cargo run -q -- crd > {file}"
        );
    }
}
