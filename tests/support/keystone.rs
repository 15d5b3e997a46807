//! A real OpenStack Keystone (Debian `keystone`, Zed) on loopback: sqlite in WAL mode, fernet
//! tokens, served by uwsgi. The database, fernet and credential keys are made once per test
//! process (`db_sync`, `fernet_setup`, `credential_setup`, `bootstrap` with region `RegionOne`)
//! and copied per server. The test registers regions, the image service and its endpoints
//! through Keystone's own API, as an operator of the cloud would.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::need;
use super::operator::free_port;

pub const ADMIN_PASSWORD: &str = "adm1n-s3cret";

fn conf(dir: &Path) -> String {
    format!(
        "[DEFAULT]\nuse_stderr = true\n[database]\nconnection = sqlite:///{d}/keystone.db\n\
         [token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
         [credential]\nkey_repository = {d}/credential-keys\n",
        d = dir.display()
    )
}

fn manage(dir: &Path, args: &[&str]) {
    let out = Command::new("keystone-manage")
        .arg("--config-file")
        .arg(dir.join("keystone.conf"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run keystone-manage");
    assert!(
        out.status.success(),
        "keystone-manage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bootstrapped Keystone directory, made once per test process.
fn template() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        need("keystone-manage", "keystone");
        need("uwsgi", "uwsgi and uwsgi-plugin-python3");
        let dir = std::env::temp_dir().join(format!("imgrep-keystone-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keystone.conf"), conf(&dir)).unwrap();
        manage(&dir, &["db_sync"]);
        manage(
            &dir,
            &["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
        );
        manage(
            &dir,
            &[
                "credential_setup",
                "--keystone-user",
                "root",
                "--keystone-group",
                "root",
            ],
        );
        manage(
            &dir,
            &[
                "bootstrap",
                "--bootstrap-password",
                ADMIN_PASSWORD,
                "--bootstrap-region-id",
                "RegionOne",
                "--bootstrap-public-url",
                "http://127.0.0.1:5000/v3",
            ],
        );
        // sqlite answers "database is locked" under concurrent writes unless in WAL mode.
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3; sqlite3.connect('{}').execute('PRAGMA journal_mode=WAL')",
                dir.join("keystone.db").display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// One Keystone server. Its API client ([`KeystoneApi`], also what the Glance proxies validate
/// tokens with) is shared; the server process is owned here alone, so it ends when the test's
/// `Keystone` is dropped, whatever still holds the client.
pub struct Keystone {
    child: Mutex<Child>,
    pub dir: tempfile::TempDir,
    pub api: Arc<KeystoneApi>,
}

/// Who a token speaks for.
pub struct Identity {
    pub project: String,
    pub user: String,
    pub roles: Vec<String>,
}

/// Keystone's API, as the test and keystonemiddleware use it.
pub struct KeystoneApi {
    pub port: u16,
    http: reqwest::Client,
    admin: Mutex<Option<String>>,
}

impl std::ops::Deref for Keystone {
    type Target = KeystoneApi;
    fn deref(&self) -> &KeystoneApi {
        &self.api
    }
}

impl Keystone {
    pub async fn start() -> Self {
        let tpl = template();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        copy_dir(tpl, d);
        for f in ["keystone.db-wal", "keystone.db-shm"] {
            let _ = std::fs::remove_file(d.join(f));
        }
        std::fs::write(d.join("keystone.conf"), conf(d)).unwrap();
        let port = free_port();
        let child = Command::new("uwsgi")
            .args([
                "--http-socket",
                &format!("127.0.0.1:{port}"),
                "--plugin",
                "python3",
                "--wsgi-file",
                "/usr/bin/keystone-wsgi-public",
                "--master",
                "--processes",
                "1",
                "--threads",
                "4",
                // uwsgi's http-socket resets kept-alive client connections.
                "--add-header",
                "Connection: close",
                "--die-on-term",
            ])
            .env("OS_KEYSTONE_CONFIG_DIR", d)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("uwsgi.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start uwsgi");
        let ks = Self {
            child: Mutex::new(child),
            dir,
            api: Arc::new(KeystoneApi {
                port,
                http: super::openstack::client(),
                admin: Mutex::new(None),
            }),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ks.token("admin", ADMIN_PASSWORD, "admin").await.is_none() {
            assert!(Instant::now() < deadline, "keystone did not start: {}", ks.log());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ks
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("uwsgi.log")).unwrap_or_default()
    }
}

impl KeystoneApi {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    /// A project-scoped token for a user of the Default domain.
    pub async fn token(&self, user: &str, password: &str, project: &str) -> Option<String> {
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
        let r = self
            .http
            .post(format!("{}/auth/tokens", self.url()))
            .json(&body)
            .send()
            .await
            .ok()?;
        if r.status().as_u16() != 201 {
            return None;
        }
        r.headers().get("x-subject-token")?.to_str().ok().map(String::from)
    }

    async fn admin_token(&self) -> String {
        if let Some(t) = self.admin.lock().unwrap().clone() {
            return t;
        }
        let t = self.token("admin", ADMIN_PASSWORD, "admin").await.expect("admin token");
        *self.admin.lock().unwrap() = Some(t.clone());
        t
    }

    /// What keystonemiddleware asks: the project a token is scoped to, if it is valid.
    pub async fn validate(&self, token: &str) -> Option<String> {
        self.identity(token).await.map(|i| i.project)
    }

    /// What keystonemiddleware passes on to Glance: the token's project, user and roles.
    pub async fn identity(&self, token: &str) -> Option<Identity> {
        if token.is_empty() {
            return None;
        }
        let admin = self.admin_token().await;
        let r = self
            .http
            .get(format!("{}/auth/tokens", self.url()))
            .header("X-Auth-Token", admin)
            .header("X-Subject-Token", token)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
        Some(Identity {
            project: s("/token/project/id")?,
            user: s("/token/user/id").unwrap_or_default(),
            roles: v
                .pointer("/token/roles")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("name")?.as_str().map(String::from))
                .collect(),
        })
    }

    async fn get(&self, path: &str) -> Value {
        let admin = self.admin_token().await;
        let r = self
            .http
            .get(format!("{}{path}", self.url()))
            .header("X-Auth-Token", admin)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Create a project of the Default domain and a user with the `member` role in it (not
    /// admin): another tenant. Returns the project id.
    pub async fn add_tenant(&self, project: &str, user: &str, password: &str) -> String {
        let p = self
            .post(
                "/projects",
                json!({"project": {"name": project, "domain_id": "default"}}),
            )
            .await;
        let pid = p.pointer("/project/id").and_then(Value::as_str).unwrap().to_string();
        let u = self
            .post(
                "/users",
                json!({"user": {"name": user, "password": password, "domain_id": "default", "default_project_id": pid}}),
            )
            .await;
        let uid = u.pointer("/user/id").and_then(Value::as_str).unwrap().to_string();
        let roles = self.get("/roles?name=member").await;
        let rid = roles
            .pointer("/roles/0/id")
            .and_then(Value::as_str)
            .expect("role member")
            .to_string();
        let admin = self.admin_token().await;
        let r = self
            .http
            .put(format!("{}/projects/{pid}/users/{uid}/roles/{rid}", self.url()))
            .header("X-Auth-Token", admin)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "role assignment: {}", r.status());
        pid
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let admin = self.admin_token().await;
        let r = self
            .http
            .post(format!("{}{path}", self.url()))
            .header("X-Auth-Token", admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    /// Create a region (ids are free-form and case-sensitive).
    pub async fn add_region(&self, id: &str) {
        self.post("/regions", json!({"region": {"id": id}})).await;
    }

    /// Create the image service; returns its id.
    pub async fn add_image_service(&self) -> String {
        let v = self
            .post("/services", json!({"service": {"type": "image", "name": "glance"}}))
            .await;
        v.pointer("/service/id").and_then(Value::as_str).unwrap().to_string()
    }

    /// Register an endpoint of a service in a region.
    pub async fn add_endpoint(&self, service: &str, region: &str, interface: &str, url: &str) {
        self.post(
            "/endpoints",
            json!({"endpoint": {"service_id": service, "region_id": region, "interface": interface, "url": url}}),
        )
        .await;
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap();
        // uwsgi's master and workers share the process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", c.id())])
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
}
