//! The bridge to the clouds' official SDKs (`tests/conformance/sdk_check.py`, run with the
//! interpreter `make tools` installs in `.tools/sdk`): exchanges checked against the SDKs' request
//! and response models, requests signed by the SDKs' signers, the error codes the SDKs list.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The SDK venv's interpreter; its absence is a failure (`make tools` installs it), not a skip.
fn python() -> PathBuf {
    let p = root().join(".tools/sdk/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make tools` (the SDKs are the oracle of these checks)",
        p.display()
    );
    p
}

fn run(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(python())
        .arg(root().join("tests/conformance/sdk_check.py"))
        .args(args)
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sdk_check.py");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sdk_check.py {args:?} failed (the input is kept):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Check exchanges (method, path, query, headers, body, status, response) against the SDKs.
pub fn check_exchanges(exchanges: &[Value]) {
    assert!(!exchanges.is_empty(), "no exchanges to check");
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), serde_json::to_vec(exchanges).unwrap()).unwrap();
    let path = f.into_temp_path().keep().unwrap();
    let out = run(&["exchanges", path.to_str().unwrap()], None);
    println!("{out}");
    let _ = std::fs::remove_file(&path);
}

/// The violations among `exchanges`, without failing (for a test that is failing already:
/// a wrong request is often why a stand-in timed out, so it is said first).
pub fn violations(exchanges: &[Value]) -> Vec<String> {
    let Ok(f) = tempfile::NamedTempFile::new() else {
        return Vec::new();
    };
    if exchanges.is_empty() || std::fs::write(f.path(), serde_json::to_vec(exchanges).unwrap_or_default()).is_err() {
        return Vec::new();
    }
    let Ok(out) = Command::new(root().join(".tools/sdk/bin/python"))
        .arg(root().join("tests/conformance/sdk_check.py"))
        .args(["exchanges", &f.path().to_string_lossy()])
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("VIOLATION"))
        .map(String::from)
        .collect()
}

/// What the SDKs' signers give for these requests.
pub fn sdk_signatures(reqs: &Value) -> Vec<Value> {
    serde_json::from_str(&run(&["sign"], Some(&reqs.to_string()))).unwrap()
}

/// The error codes the SDKs list: `cvm`, `tcr` (errorcodes.py), `aws_retry` (botocore's
/// throttling codes).
pub fn sdk_error_codes() -> Value {
    serde_json::from_str(&run(&["codes"], None)).unwrap()
}
