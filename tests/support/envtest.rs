//! A real control plane for tests: the `etcd` and `kube-apiserver` binaries of the envtest
//! convention (`KUBEBUILDER_ASSETS` names a directory with `etcd`, `kube-apiserver` and
//! `kubectl`; `make tools` unpacks them into `.tools/envtest` from `../shared/envtest` and checks
//! their sums). No kubelet, scheduler or controller-manager: nothing runs pods, garbage-collects
//! owner references or empties deleted namespaces.
//!
//! One control plane per test binary, started by the first test that asks for it and shared by
//! the binary's tests; each test works in its own namespace ([`ControlPlane::namespace`]) and
//! runs its operator with `--namespace` (watch only it) and its leader Lease there, so the tests of one
//! binary can run in parallel. etcd runs with `--unsafe-no-fsync` on a temporary directory. The
//! processes are ended by PID when the test binary exits (a watchdog shell waits for it), and
//! their directory is removed.
//!
//! The server runs with `--authorization-mode=RBAC`: the tests' own client is an admin
//! (a client certificate with `O=system:masters`); [`ControlPlane::service_account_kubeconfig`]
//! gives a ServiceAccount's token (TokenRequest) to run the operator as the chart grants it.
//!
//! Without assets the real-server tests are skipped with one loud line on stderr; with
//! `IMGREP_REQUIRE_ENVTEST=1` (what `.ci/run` sets) a missing asset fails the test instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};

use super::operator::spawn_on_free_port;

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    /// Where the certificates, kubeconfigs, etcd's data and the logs are.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin kubeconfig (client certificate, `system:masters`).
    pub kubeconfig: PathBuf,
    /// The directory with `etcd`, `kube-apiserver` and `kubectl`.
    pub assets: PathBuf,
    ca_pem: String,
}

static PLANE: OnceLock<Option<ControlPlane>> = OnceLock::new();
static QUIET: OnceLock<Option<ControlPlane>> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// The binary's control plane, started on first use; `None` (after one loud line) when no
/// envtest assets are installed and `IMGREP_REQUIRE_ENVTEST` is not set.
pub fn control_plane() -> Option<&'static ControlPlane> {
    PLANE.get_or_init(start_or_skip).as_ref()
}

/// A control plane no other suite of the binary sends requests to: for the at-rest count, which
/// reads the server's own request counters (server-wide). Started on first use, as
/// [`control_plane`].
pub fn quiet_control_plane() -> Option<&'static ControlPlane> {
    QUIET.get_or_init(start_or_skip).as_ref()
}

fn start_or_skip() -> Option<ControlPlane> {
    let Some(assets) = assets() else {
        let why = "no envtest assets: set KUBEBUILDER_ASSETS to a directory with etcd, kube-apiserver \
             and kubectl (`make tools` unpacks ../shared/envtest into .tools/envtest; elsewhere \
             `setup-envtest use 1.36.x`)";
        assert!(
            std::env::var("IMGREP_REQUIRE_ENVTEST").is_err(),
            "{why}; IMGREP_REQUIRE_ENVTEST is set, so the real-server tests may not be skipped"
        );
        eprintln!("\n!!!! SKIPPING the real-API-server tests of this binary: {why}\n");
        return None;
    };
    // Started on a thread of its own: the caller may be inside a tokio runtime.
    Some(std::thread::spawn(move || ControlPlane::start(assets)).join().unwrap())
}

/// `KUBEBUILDER_ASSETS`, or `.tools/envtest` of this checkout, if it holds the three binaries.
fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/envtest"));
    ["etcd", "kube-apiserver", "kubectl"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is missing: install openssl (make tools does)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate signed by the CA in `dir`.
fn signed_cert(dir: &Path, name: &str, subject: &str, ext: Option<&str>) {
    let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
    ];
    let ext_file = format!("{name}.ext");
    if let Some(e) = ext {
        std::fs::write(dir.join(format!("{name}.ext")), e).unwrap();
        args.extend(["-extfile", ext_file.as_str()]);
    }
    openssl(dir, &args);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// End `pids` (SIGKILL) and remove `dir` once process `parent` is gone.
fn watchdog(parent: u32, pids: &[u32], dir: &Path) {
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {} 2>/dev/null; sleep 0.5; rm -rf '{}'",
        pids.join(" "),
        dir.display()
    );
    let dog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the control plane's watchdog");
    // It outlives this process on purpose: that is its job.
    std::mem::forget(dog);
}

impl ControlPlane {
    fn start(assets: PathBuf) -> Self {
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("envtest-").tempdir().unwrap().keep();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=envtest-ca",
            ],
        );
        signed_cert(
            &dir,
            "server",
            "/CN=kube-apiserver",
            Some("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"),
        );
        signed_cert(
            &dir,
            "admin",
            "/O=system:masters/CN=envtest-admin",
            Some("extendedKeyUsage=clientAuth\n"),
        );
        openssl(&dir, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(&dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);

        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let (etcd_port, etcd) = spawn_on_free_port(
            Duration::from_secs(20),
            |port| {
                let data = dir.join(format!("etcd-{port}"));
                Command::new(assets.join("etcd"))
                    .arg(format!("--data-dir={}", data.display()))
                    .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
                    .arg("--listen-peer-urls=http://127.0.0.1:0")
                    .args(["--unsafe-no-fsync", "--log-level=warn"])
                    .stdin(Stdio::null())
                    .stdout(log("etcd.log"))
                    .stderr(log("etcd.err.log"))
                    .spawn()
                    .expect("start etcd")
            },
            |c| {
                let _ = c.kill();
                let _ = c.wait();
            },
        )
        .expect("etcd did not start (see its log in the envtest directory)");
        let (api_port, apiserver) = spawn_on_free_port(
            Duration::from_secs(60),
            |port| Self::spawn_apiserver(&assets, &dir, port, etcd_port),
            |c| {
                let _ = c.kill();
                let _ = c.wait();
            },
        )
        .unwrap_or_else(|| {
            panic!(
                "kube-apiserver did not start: {}",
                tail(&dir.join("kube-apiserver.log"))
            )
        });
        watchdog(std::process::id(), &[etcd.id(), apiserver.id()], &dir);
        // The children are ended by the watchdog; their handles are not needed.
        std::mem::forget((etcd, apiserver));

        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        let url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let user = format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            b64(&read("admin.crt")),
            b64(&read("admin.key"))
        );
        std::fs::write(&kubeconfig, kubeconfig_text(&url, &ca_pem, &user)).unwrap();
        let plane = Self {
            dir,
            url,
            kubeconfig,
            assets,
            ca_pem,
        };
        plane.wait_ready(Duration::from_secs(90));
        // The CRDs, server-side, as a user installs them.
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        plane.kubectl_ok(&[
            "apply",
            "--server-side",
            "--field-manager=envtest",
            "-f",
            crds.to_str().unwrap(),
        ]);
        plane.kubectl_ok(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
        eprintln!(
            "envtest: kube-apiserver {} and etcd ready in {:.1?} ({})",
            plane.url,
            started.elapsed(),
            plane.dir.display()
        );
        plane
    }

    fn spawn_apiserver(assets: &Path, dir: &Path, port: u16, etcd_port: u16) -> Child {
        let f = |n: &str| dir.join(n).display().to_string();
        let log = std::fs::File::create(dir.join("kube-apiserver.log")).unwrap();
        Command::new(assets.join("kube-apiserver"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--client-ca-file={}", f("ca.crt")))
            .arg(format!("--tls-cert-file={}", f("server.crt")))
            .arg(format!("--tls-private-key-file={}", f("server.key")))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", f("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", f("sa.key")))
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver")
    }

    fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after {within:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.dir.join("kube-apiserver.log"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Run the real `kubectl` as admin.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.assets.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// Run `kubectl` as admin; its stdout, or a panic with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl` with `stdin` as its standard input (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(self.assets.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// An admin client (build one per test: a client belongs to the runtime that made it).
    pub async fn client(&self) -> Client {
        client_from(&std::fs::read_to_string(&self.kubeconfig).unwrap()).await
    }

    /// A fresh namespace for one test, named `prefix-N`.
    pub async fn namespace(&self, c: &Client, prefix: &str) -> String {
        let name = format!("{prefix}-{}", NAMESPACES.fetch_add(1, Ordering::Relaxed));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .unwrap();
        Api::<Namespace>::all(c.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        name
    }

    /// Copy the admin kubeconfig into `dir` (for an operator process) and return its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("kubeconfig");
        // Written once and then only read: copied over while another operator process of the
        // same test was reading it, the file was half-written and that process exited
        // ("reading the Kubernetes client configuration", seen in the shard tests on a busy
        // machine). A new file goes in whole (a rename).
        if !p.exists() {
            let tmp = dir.join(format!("kubeconfig.{}", std::process::id()));
            std::fs::copy(&self.kubeconfig, &tmp).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        }
        p
    }

    /// A kubeconfig in `dir` that authenticates as ServiceAccount `ns/name` (created if missing)
    /// with a token from the TokenRequest API.
    pub fn service_account_kubeconfig(&self, dir: &Path, ns: &str, name: &str) -> PathBuf {
        let _ = self.kubectl(&["-n", ns, "create", "serviceaccount", name]);
        let token = self.kubectl_ok(&["-n", ns, "create", "token", name, "--duration=2h"]);
        let p = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(
            &p,
            kubeconfig_text(&self.url, &self.ca_pem, &format!("token: {}", token.trim())),
        )
        .unwrap();
        p
    }

    /// The server's `apiserver_request_total` counters: (verb, resource, code) -> count, for
    /// resources whose name is in `resources` (all if empty); a subresource is named after its
    /// resource (`imagereplications/status`). Server-wide: every client's requests count.
    pub fn request_totals(&self, resources: &[&str]) -> std::collections::BTreeMap<(String, String, String), u64> {
        let text = self.kubectl_ok(&["get", "--raw", "/metrics"]);
        let label = |line: &str, key: &str| {
            let pat = format!(",{key}=\"");
            let line = line.replacen('{', ",", 1);
            line.find(&pat).map(|i| {
                let rest = &line[i + pat.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_string()
            })
        };
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
            let (Some(verb), Some(res), Some(code)) =
                (label(line, "verb"), label(line, "resource"), label(line, "code"))
            else {
                continue;
            };
            if !resources.is_empty() && !resources.contains(&res.as_str()) {
                continue;
            }
            let res = match label(line, "subresource").filter(|s| !s.is_empty()) {
                Some(sub) => format!("{res}/{sub}"),
                None => res,
            };
            let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *out.entry((verb, res, code)).or_insert(0) += n as u64;
        }
        out
    }
}

/// (verb, resource) -> requests between two readings of [`ControlPlane::request_totals`].
pub fn request_delta(
    before: &std::collections::BTreeMap<(String, String, String), u64>,
    after: &std::collections::BTreeMap<(String, String, String), u64>,
) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 {
            *out.entry((k.0.clone(), k.1.clone())).or_insert(0) += d;
        }
    }
    out
}

/// A kubeconfig for `url` trusting `ca_pem`, with the `user` fields given (indented 4).
fn kubeconfig_text(url: &str, ca_pem: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: envtest\n  user:\n    {user}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest\ncurrent-context: envtest\n",
        b64(ca_pem.as_bytes())
    )
}

/// A client from kubeconfig text.
pub async fn client_from(kubeconfig: &str) -> Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// The last lines of a log file.
fn tail(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
