//! Records the git revision of the build (`image-replication-operator --version`). A build
//! outside a git checkout (or with `GIT_REVISION` set, as image builds from an archive do) uses
//! the environment's value or `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    let rev = std::env::var("GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|r| !r.is_empty())
        });
    // Rebuild when HEAD moves; only paths that exist (a missing one reruns every build).
    for p in [".git/HEAD", ".git/packed-refs"] {
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.trim().strip_prefix("ref: ")
        && Path::new(".git").join(r).exists()
    {
        println!("cargo:rerun-if-changed=.git/{r}");
    }
    println!(
        "cargo:rustc-env=GIT_REVISION={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
}
