//! The operator image `make image` builds without a container engine (`hack/image.py`): a valid
//! OCI layout whose digests verify (skopeo reads it), the config says what it should, two builds
//! give the same digest, and the image runs: its root filesystem, unpacked, runs the binary under
//! `chroot` as user 65532 with nothing else (no shell).
//!
//! Built from the binary this test run has (`cargo test` builds it), its debug symbols stripped:
//! what is checked is the image `hack/image.py` makes of a binary, the same for `make image`'s
//! release build, which the test job no longer builds (11 minutes of a fresh-clone CI run, issue
//! #32). Needs skopeo, binutils' `strip` and root (for chroot).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_replication_operator::oci::api::hex;
use serde_json::Value;
use sha2::Digest;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The operator binary without debug symbols (287 MB with them), made once per test run.
fn binary() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-binary");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("image-replication-operator");
        let ok = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(env!("CARGO_BIN_EXE_image-replication-operator"))
            .status()
            .expect("binutils' strip runs");
        assert!(ok.success(), "strip failed");
        out
    })
    .clone()
}

/// Build the image into `dir` (layout `dir/oci`, archive `dir/image.tar`); returns the
/// manifest digest it prints.
fn build(dir: &Path) -> String {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("hack/image.py"))
        .arg("--binary")
        .arg(binary())
        .arg("--out")
        .arg(dir.join("oci"))
        .arg("--archive")
        .arg(dir.join("image.tar"))
        .args([
            "--version",
            "0.1.0",
            "--revision",
            "0123456789abcdef",
            "--created",
            "1764547200",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.trim().rsplit(' ').next().unwrap().to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let name = digest.strip_prefix("sha256:").unwrap();
    let data = std::fs::read(layout.join("blobs/sha256").join(name)).unwrap();
    assert_eq!(hex(&sha2::Sha256::digest(&data)), name, "blob {digest} verifies");
    data
}

fn json(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap()
}

#[test]
fn the_image_is_reproducible_valid_and_runs_as_nonroot() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (d1, d2) = (build(one.path()), build(two.path()));
    assert_eq!(d1, d2, "the same checkout gives the same digest");
    assert_eq!(
        std::fs::read(one.path().join("image.tar")).unwrap(),
        std::fs::read(two.path().join("image.tar")).unwrap(),
        "and the same archive"
    );

    // The layout: index -> manifest -> config and layer, every digest and size as stated.
    let layout = one.path().join("oci");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], d1.as_str());
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
    let manifest_bytes = blob(&layout, &d1);
    assert_eq!(m["size"], manifest_bytes.len());
    let manifest = json(&manifest_bytes);
    let config_bytes = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config = json(&config_bytes);
    let layer_desc = &manifest["layers"][0];
    assert_eq!(layer_desc["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer = blob(&layout, layer_desc["digest"].as_str().unwrap());
    assert_eq!(layer_desc["size"], layer.len());

    // skopeo reads the layout (and the archive) and sees what the config says.
    for reference in [
        format!("oci:{}:0.1.0", layout.display()),
        format!("oci-archive:{}", one.path().join("image.tar").display()),
    ] {
        let out = Command::new("skopeo")
            .args(["inspect", "--config", &reference])
            .output()
            .expect("run skopeo (make tools installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json(&out.stdout), config, "{reference}");
    }
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/image-replication-operator"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    assert_eq!(c["User"], "65532:65532");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(labels["org.opencontainers.image.revision"], "0123456789abcdef");
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert!(labels["org.opencontainers.image.licenses"].is_string());
    assert_eq!(config["created"], "2025-12-01T00:00:00Z");

    // The layer's diff id is the uncompressed tar's digest; unpack it as a root filesystem.
    let root = tempfile::tempdir().unwrap();
    let tgz = one.path().join("layer.tgz");
    std::fs::write(&tgz, &layer).unwrap();
    let st = Command::new("tar")
        .args(["-xzf", tgz.to_str().unwrap(), "-C", root.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let tar = Command::new("gzip")
        .args(["-dc", tgz.to_str().unwrap()])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", hex(&sha2::Sha256::digest(&tar)))
    );
    for absent in ["bin/sh", "bin/bash", "usr/bin/sh"] {
        assert!(!root.path().join(absent).exists(), "{absent} in the image");
    }
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(root.path().join("etc/ssl/certs/ca-certificates.crt").exists());

    // It runs with only what it carries, as the nonroot user.
    let run = |args: &[&str]| {
        let out = Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(root.path())
            .arg("/usr/local/bin/image-replication-operator")
            .args(args)
            .output()
            .expect("chroot (needs root)");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["--version"]).starts_with("image-replication-operator 0.1.0 ("));
    let crds = run(&["crdgen"]);
    assert!(
        crds.contains("kind: CustomResourceDefinition") && crds.contains("imagereplications.replication.imageops.io")
    );
}

/// `make image-push` is `skopeo copy` of the layout: the registry holds the same digest.
#[test]
fn the_image_pushes_to_a_registry_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let digest = build(dir.path());
    let reg = support::registry::TestRegistry::start();
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:0.1.0", dir.path().join("oci").display()))
        .arg(format!(
            "docker://{}/imageops/image-replication-operator:0.1.0",
            reg.host()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        reg.digest_of("imageops/image-replication-operator", "0.1.0"),
        Some(digest)
    );
}
