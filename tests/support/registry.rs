//! Real CNCF distribution registries (Debian `docker-registry`) on loopback ports, one per
//! "region", with temporary storage; seeded with skopeo from layouts made by
//! hack/make-oci-layout.py. Killed by PID on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::operator::{spawn_on_free_port, wait_listening};

pub struct TestRegistry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    scheme: &'static str,
}

fn need(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{cmd} is not installed: run `make tools`");
}

/// Options of a test registry.
#[derive(Default)]
pub struct Options {
    /// htpasswd basic auth with this user and password.
    pub basic: Option<(String, String)>,
    /// Serve TLS with a certificate signed by a fresh CA (see `ca_pem`).
    pub tls: bool,
    /// Send notifications to this URL with `Authorization: Bearer <token>`.
    pub notify: Option<(String, String)>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The port's place in the registry's config, filled in when it is started.
const PORT: &str = "{PORT}";

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        need("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{{PORT}}\n",
            d.join("data").display()
        );
        if opts.tls {
            need("openssl");
            run(Command::new("openssl").current_dir(d).args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]));
            run(Command::new("openssl").current_dir(d).args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ]));
            std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
            run(Command::new("openssl").current_dir(d).args([
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ]));
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            ));
        }
        if let Some((u, p)) = &opts.basic {
            need("htpasswd");
            let out = Command::new("htpasswd").args(["-Bbn", u, p]).output().unwrap();
            std::fs::write(d.join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        if let Some((url, token)) = &opts.notify {
            config.push_str(&format!(
                "notifications:\n  endpoints:\n    - name: operator\n      url: {url}\n      headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignoredmediatypes: [application/octet-stream]\n      ignore:\n        actions: [pull]\n"
            ));
        }
        let scheme = if opts.tls { "https" } else { "http" };
        // The port is chosen last, right before the registry binds it, and the registry must be
        // seen holding it: a port another test's server took between `free_port` and the bind
        // would otherwise pass for this registry (the TLS set-up above takes a second or two).
        let cfg = dir.path().join("config.yml");
        let started = spawn_on_free_port(
            Duration::from_secs(15),
            |port| {
                std::fs::write(&cfg, config.replace(PORT, &port.to_string())).unwrap();
                Self::spawn(dir.path())
            },
            |child| {
                let _ = child.kill();
                let _ = child.wait();
            },
        );
        let Some((port, child)) = started else {
            panic!(
                "registry did not start:\n{}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
        };
        Self {
            port,
            dir,
            child,
            scheme,
        }
    }

    fn spawn(dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry")
    }

    /// Take the registry down (its port refuses connections; its storage stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Bring a stopped registry back on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path());
        assert!(
            wait_listening(&mut self.child, self.port, Duration::from_secs(15)),
            "registry did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The CA that signed the TLS certificate (TLS registries only).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Requests the registry served, as (method, uri, status), from its access log.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let q = l.split_once('"')?.1;
                let (req, rest) = q.split_once('"')?;
                let mut p = req.split_whitespace();
                let (m, u) = (p.next()?, p.next()?);
                let status = rest.split_whitespace().next()?.parse().ok()?;
                Some((m.to_string(), u.to_string(), status))
            })
            .collect()
    }

    /// Number of blob upload sessions started (POST .../blobs/uploads/ without a successful mount).
    pub fn uploads_started(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(m, u, s)| m == "POST" && u.contains("/blobs/uploads/") && *s == 202)
            .count()
    }

    /// Seed `repo:tag` with a layout from hack/make-oci-layout.py `args`; returns the digest
    /// and, with --sign, the signature tag.
    pub fn seed(&self, repo: &str, tag: &str, args: &[&str]) -> (String, Option<String>) {
        need("skopeo");
        let layout = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/make-oci-layout.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(layout.path())
            .args(["--tag", tag])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let digest = field("digest:").unwrap();
        let sig = field("signature tag:");
        for t in std::iter::once(tag.to_string()).chain(sig.clone()) {
            let out = Command::new("skopeo")
                .args(["copy", "--all", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{t}", layout.path().display()))
                .arg(format!("docker://{}/{repo}:{t}", self.host()))
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
        }
        (digest, sig)
    }

    /// The digest skopeo sees for repo:tag (independent of the operator's client).
    pub fn digest_of(&self, repo: &str, tag: &str) -> Option<String> {
        self.digest_as(repo, tag, None)
    }

    /// `digest_of` with basic credentials `user:password`.
    pub fn digest_of_as(&self, repo: &str, tag: &str, user: &str, password: &str) -> Option<String> {
        self.digest_as(repo, tag, Some(format!("{user}:{password}")))
    }

    fn digest_as(&self, repo: &str, tag: &str, creds: Option<String>) -> Option<String> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg("--creds").arg(c);
        }
        let out = cmd
            .arg(format!(
                "docker://{}/{repo}{}{tag}",
                self.host(),
                if tag.starts_with("sha256:") { "@" } else { ":" }
            ))
            .output()
            .unwrap();
        out.status.success().then(|| {
            use sha2::Digest;
            format!(
                "sha256:{}",
                image_replication_operator::oci::api::hex(&sha2::Sha256::digest(&out.stdout))
            )
        })
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
