//! The committed CRD YAML (crds/ and the Helm chart's copy) equals what the Rust types generate.
//! Run `make crds` after changing src/api.

use image_replication_operator::crdgen;

#[test]
fn committed_crds_match_the_types() {
    let root = env!("CARGO_MANIFEST_DIR");
    for dir in ["crds", "charts/image-replication-operator/files/crds"] {
        for crd in crdgen::crds() {
            let path = format!("{root}/{dir}/{}", crdgen::file_name(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; run `make crds`"));
            assert!(
                committed == crdgen::to_yaml(&crd),
                "{path} differs from what src/api generates; run `make crds`"
            );
        }
    }
}
