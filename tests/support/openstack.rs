//! Real OpenStack Glance servers (Debian `glance-api`, sqlite + file store) on loopback, a
//! Keystone v3 stand-in that follows the published token API (password and application
//! credential, service catalog) or a real Keystone ([`super::keystone`]), and per-region auth
//! proxies that do what keystonemiddleware does in front of Glance: reject unknown tokens with
//! 401 (checked against the stand-in's tokens, or validated by the real Keystone) and pass the
//! identity on as `X-Identity-Status`/`X-Project-Id`/`X-User-Id`/`X-Roles`. The proxies also
//! count requests, measure concurrent uploads and can slow uploads down, so tests can see copies
//! in flight.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The stand-in Keystone's password for user demo, and application credential app-1's
/// secret: distinctive, so that the secrets checks can look for them.
pub const PASSWORD: &str = "os-pw-7Hq2-distinct";
pub const APP_SECRET: &str = "app-secret-Zk81-distinct";

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

use super::need;
use super::operator::spawn_on_free_port;

pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// A migrated sqlite database, made once per test process and copied per server.
fn template_db() -> &'static PathBuf {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        need("glance-api", "glance-api");
        let dir = std::env::temp_dir().join(format!("imgrep-glance-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("glance-api.conf");
        std::fs::write(
            &conf,
            format!("[database]\nconnection = sqlite:///{}/glance.sqlite\n", dir.display()),
        )
        .unwrap();
        let out = Command::new("glance-manage")
            .args(["--config-file", conf.to_str().unwrap(), "db_sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "glance-manage db_sync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("glance.sqlite")
    })
}

/// One Glance API server.
pub struct Glance {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Glance {
    pub fn start() -> Self {
        let db = template_db();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["images", "staging", "tasks"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::copy(db, d.join("glance.sqlite")).unwrap();
        let mut paste = std::fs::read_to_string("/etc/glance/glance-api-paste.ini").unwrap();
        paste.push_str(
            "\n[pipeline:glance-api-trusted]\npipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation osprofiler context rootapp\n",
        );
        std::fs::write(d.join("paste.ini"), paste).unwrap();
        // The port is the last thing chosen, and glance-api must be seen holding it.
        let started = spawn_on_free_port(
            Duration::from_secs(60),
            |port| {
                let conf = format!(
                    "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\nenabled_backends = fs:file\nworkers = 1\nlog_file = {d}/api.log\n\
                     [database]\nconnection = sqlite:///{d}/glance.sqlite\n[paste_deploy]\nflavor = trusted\nconfig_file = {d}/paste.ini\n\
                     [glance_store]\ndefault_backend = fs\n[fs]\nfilesystem_store_datadir = {d}/images\n\
                     [os_glance_staging_store]\nfilesystem_store_datadir = {d}/staging\n[os_glance_tasks_store]\nfilesystem_store_datadir = {d}/tasks\n\
                     [oslo_policy]\nenforce_new_defaults = false\n",
                    d = d.display()
                );
                std::fs::write(d.join("glance-api.conf"), conf).unwrap();
                Command::new("glance-api")
                    .args(["--config-file", d.join("glance-api.conf").to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
                    .process_group(0)
                    .spawn()
                    .expect("start glance-api")
            },
            end_group,
        );
        let Some((port, child)) = started else {
            panic!("glance-api did not start: {}", log_of(dir.path()));
        };
        Self { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        log_of(self.dir.path())
    }

    fn admin(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(m, format!("{}{path}", self.url()))
            .header("X-Identity-Status", "Confirmed")
            .header("X-Project-Id", PROJECT)
            .header("X-User-Id", "tester")
            .header("X-Roles", "admin,member,reader")
    }

    /// Create an image from a file; returns its id (and waits until active).
    pub async fn upload(&self, name: &str, disk_format: &str, file: &Path, props: Value) -> String {
        let mut doc = json!({"name": name, "disk_format": disk_format, "container_format": "bare"});
        for (k, v) in props.as_object().into_iter().flatten() {
            doc[k] = v.clone();
        }
        let r = self
            .admin(reqwest::Method::POST, "/v2/images")
            .json(&doc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create image");
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        self.put_data(&id, file).await;
        id
    }

    /// Create an image record without data (status `queued`).
    pub async fn create_empty(&self, name: &str) -> String {
        let doc = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
        let r = self
            .admin(reqwest::Method::POST, "/v2/images")
            .json(&doc)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Upload data into an existing (queued) image.
    pub async fn put_data(&self, id: &str, file: &Path) {
        let r = self
            .admin(reqwest::Method::PUT, &format!("/v2/images/{id}/file"))
            .header("Content-Type", "application/octet-stream")
            .body(std::fs::read(file).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "upload image data");
    }

    pub async fn deactivate(&self, id: &str) {
        let r = self
            .admin(reqwest::Method::POST, &format!("/v2/images/{id}/actions/deactivate"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "deactivate");
    }

    pub async fn image(&self, id: &str) -> Option<Value> {
        let r = self
            .admin(reqwest::Method::GET, &format!("/v2/images/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        Some(r.json().await.unwrap())
    }

    /// Every image on this server, hidden ones (`os_hidden`) included.
    pub async fn images(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for q in ["limit=1000", "limit=1000&os_hidden=true"] {
            let r = self
                .admin(reqwest::Method::GET, &format!("/v2/images?{q}"))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            all.extend(v["images"].as_array().cloned().unwrap_or_default());
        }
        all
    }

    /// Images copied by the operator into `region` (they carry a token and their region).
    pub async fn copies_in(&self, region: &str) -> Vec<Value> {
        self.images()
            .await
            .into_iter()
            .filter(|i| i["imgrep_client_token"].is_string() && i["imgrep_region"] == region)
            .collect()
    }

    pub async fn delete(&self, id: &str) {
        let r = self
            .admin(reqwest::Method::DELETE, &format!("/v2/images/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "delete image");
    }
}

impl Drop for Glance {
    fn drop(&mut self) {
        end_group(&mut self.child);
    }
}

/// glance-api forks workers: end the whole process group.
fn end_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// glance-api's log and stderr in its directory.
fn log_of(d: &Path) -> String {
    format!(
        "{}\n{}",
        std::fs::read_to_string(d.join("api.log")).unwrap_or_default(),
        std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
        .build()
        .unwrap()
}

/// What a region's proxy saw.
#[derive(Default)]
pub struct RegionStats {
    /// (method, path, status)
    pub requests: Mutex<Vec<(String, String, u16)>>,
    pub uploads_now: AtomicUsize,
    pub uploads_max: AtomicUsize,
    /// Upload speed limit in bytes per second (0: none).
    pub upload_rate: AtomicU64,
}

impl RegionStats {
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && p.starts_with(path_prefix))
            .count()
    }
}

/// How a proxy checks a token: the stand-in's issued tokens, or the real Keystone's answer.
#[derive(Clone)]
enum TokenCheck {
    Issued(Arc<Mutex<HashSet<String>>>),
    Keystone(Arc<super::keystone::KeystoneApi>),
}

impl TokenCheck {
    /// The project, user and roles of the token, if it is valid (the stand-in's tokens are
    /// all user demo's, with every role).
    async fn identity(&self, token: &str) -> Option<(String, String, String)> {
        match self {
            Self::Issued(t) => t.lock().unwrap().contains(token).then(|| {
                (
                    PROJECT.to_string(),
                    "u-demo".to_string(),
                    "admin,member,reader".to_string(),
                )
            }),
            Self::Keystone(k) => k.identity(token).await.map(|i| (i.project, i.user, i.roles.join(","))),
        }
    }
}

/// Keystone (stand-in or real) plus one auth proxy per region.
pub struct Cloud {
    pub keystone_port: u16,
    pub regions: HashMap<String, Arc<RegionStats>>,
    /// Uploads across every region (concurrency high-water mark).
    pub all: Arc<RegionStats>,
    pub auth_requests: Arc<AtomicUsize>,
    /// Region -> proxy URL.
    proxies: HashMap<String, String>,
}

impl Cloud {
    /// `regions`: (region id, Glance URL behind it, upload rate limit in bytes/s or 0).
    pub async fn start(regions: &[(&str, String, u64)]) -> Self {
        let tokens: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
        let mut stats = HashMap::new();
        let mut catalog = Vec::new();
        let all = Arc::new(RegionStats::default());
        for (region, upstream, rate) in regions {
            let s = Arc::new(RegionStats::default());
            s.upload_rate.store(*rate, Ordering::Relaxed);
            let check = TokenCheck::Issued(tokens.clone());
            let port = start_proxy(upstream.clone(), check, s.clone(), all.clone()).await;
            catalog.push(json!({"region_id": region, "region": region, "interface": "public",
                "url": format!("http://127.0.0.1:{port}")}));
            stats.insert(region.to_string(), s);
        }
        let auth_requests = Arc::new(AtomicUsize::new(0));
        let (t2, a2) = (tokens.clone(), auth_requests.clone());
        let catalog = json!([{"type": "image", "name": "glance", "endpoints": catalog},
                             {"type": "identity", "name": "keystone", "endpoints": []}]);
        let app = axum::Router::new().route(
            "/v3/auth/tokens",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (tokens, catalog, count) = (t2.clone(), catalog.clone(), a2.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = &v["auth"]["identity"];
                    let ok = match id["methods"][0].as_str() {
                        Some("password") => {
                            let u = &id["password"]["user"];
                            u["name"] == "demo"
                                && u["password"] == PASSWORD
                                && u["domain"]["name"] == "Default"
                                && (v["auth"]["scope"]["project"]["name"] == "demo"
                                    || v["auth"]["scope"]["project"]["id"] == PROJECT)
                        }
                        Some("application_credential") => {
                            id["application_credential"]["id"] == "app-1"
                                && id["application_credential"]["secret"] == APP_SECRET
                        }
                        _ => false,
                    };
                    if !ok {
                        return Response::builder()
                            .status(401)
                            .body(Body::from(r#"{"error": {"code": 401, "title": "Unauthorized"}}"#))
                            .unwrap();
                    }
                    let token = format!("gAAAA{}", rand_hex());
                    tokens.lock().unwrap().insert(token.clone());
                    let expires =
                        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1);
                    let body = json!({"token": {"expires_at": expires.to_string(), "methods": [id["methods"][0]],
                        "project": {"id": PROJECT, "name": "demo", "domain": {"id": "default", "name": "Default"}},
                        "user": {"id": "u-demo", "name": "demo"}, "roles": [{"name": "member"}],
                        "catalog": catalog}});
                    Response::builder()
                        .status(201)
                        .header("X-Subject-Token", token)
                        .header("Content-Type", "application/json")
                        .body(Body::from(body.to_string()))
                        .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let keystone_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            keystone_port,
            regions: stats,
            all,
            auth_requests,
            proxies: HashMap::new(),
        }
    }

    /// A real Keystone's cloud: one proxy per region in front of its Glance, validating tokens
    /// with Keystone. The regions and image endpoints are for the test to register
    /// ([`Cloud::proxy_url`]), so it can add them while the operator runs.
    pub async fn with_keystone(ks: Arc<super::keystone::KeystoneApi>, regions: &[(&str, String)]) -> Self {
        let all = Arc::new(RegionStats::default());
        let mut stats = HashMap::new();
        let mut urls = HashMap::new();
        for (region, upstream) in regions {
            let s = Arc::new(RegionStats::default());
            let port = start_proxy(
                upstream.clone(),
                TokenCheck::Keystone(ks.clone()),
                s.clone(),
                all.clone(),
            )
            .await;
            stats.insert(region.to_string(), s);
            urls.insert(region.to_string(), format!("http://127.0.0.1:{port}"));
        }
        Self {
            keystone_port: ks.port,
            regions: stats,
            all,
            auth_requests: Arc::new(AtomicUsize::new(0)),
            proxies: urls,
        }
    }

    /// The URL of a region's proxy (what the catalog names as its image endpoint).
    pub fn proxy_url(&self, region: &str) -> String {
        self.proxies[region].clone()
    }

    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.keystone_port)
    }

    pub fn region(&self, r: &str) -> &RegionStats {
        &self.regions[r]
    }
}

fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    format!(
        "{:016x}{:016x}",
        h.finish(),
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    )
}

async fn start_proxy(upstream: String, tokens: TokenCheck, stats: Arc<RegionStats>, all: Arc<RegionStats>) -> u16 {
    let http = client();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
        let (http, upstream, tokens, stats, all) = (
            http.clone(),
            upstream.clone(),
            tokens.clone(),
            stats.clone(),
            all.clone(),
        );
        async move {
            let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let record = |status: u16| {
                stats
                    .requests
                    .lock()
                    .unwrap()
                    .push((method.to_string(), path.clone(), status))
            };
            let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or("");
            let Some((project, user, roles)) = tokens.identity(token).await else {
                record(401);
                return Response::builder().status(401).body(Body::empty()).unwrap();
            };
            let is_upload = method == Method::PUT && path.ends_with("/file");
            let rate = stats.upload_rate.load(Ordering::Relaxed);
            let stream = body.into_data_stream().then(move |chunk| async move {
                if let (Ok(c), true) = (&chunk, rate > 0) {
                    tokio::time::sleep(Duration::from_secs_f64(c.len() as f64 / rate as f64)).await;
                }
                chunk
            });
            let mut req = http
                .request(method.clone(), format!("{upstream}{path}"))
                .header("X-Identity-Status", "Confirmed")
                .header("X-Project-Id", project)
                .header("X-User-Id", user)
                .header("X-Roles", roles)
                .body(reqwest::Body::wrap_stream(stream));
            for (k, v) in headers.iter() {
                if k != "host" && k != "x-auth-token" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            if is_upload {
                for s in [&stats, &all] {
                    let now = s.uploads_now.fetch_add(1, Ordering::SeqCst) + 1;
                    s.uploads_max.fetch_max(now, Ordering::SeqCst);
                }
            }
            let resp = req.send().await;
            if is_upload {
                for s in [&stats, &all] {
                    s.uploads_now.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let resp = match resp {
                Ok(r) => r,
                Err(_) => {
                    record(502);
                    return Response::builder().status(502).body(Body::empty()).unwrap();
                }
            };
            let status = resp.status().as_u16();
            record(status);
            let mut out = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (k, v) in resp.headers().iter() {
                out = out.header(k, v);
            }
            out.body(Body::from_stream(resp.bytes_stream())).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A disk image made with qemu-img: `format` qcow2 or raw, `mib` of random data written in.
pub fn make_image(dir: &Path, name: &str, format: &str, mib: usize) -> PathBuf {
    need("qemu-img", "qemu-utils");
    let raw = dir.join(format!("{name}.raw"));
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15 ^ (name.len() as u64);
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(&raw, &data).unwrap();
    if format == "raw" {
        return raw;
    }
    let out = dir.join(format!("{name}.{format}"));
    let st = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            format,
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert");
    out
}
