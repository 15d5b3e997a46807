//! The OpenStack provider: Keystone v3 authentication (password or application credential) with
//! the service catalog choosing each region's image endpoint, and Glance v2.
//!
//! Glance has no cross-region copy, so the operator moves the bytes itself: it creates the
//! destination image (formats and user properties carried over, our idempotency token stored as
//! the `imgrep_client_token` property), streams the data from the source region into it, and
//! verifies that the destination's `os_hash_value` (or md5 `checksum`) equals the source's. The
//! stream runs in the background; `poll` reports it. After a restart a destination image still
//! `queued` is found by its token and the upload is started again into the same image, so a
//! crash never leaves two images.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use super::super::facts::Sharing;
use super::super::members::glance_members;
use super::super::{
    Account, CopyHandle, CopyRequest, ImageAt, ImageInfo, ImageSelector, ImageState, Member, ProviderError, Service,
    TOKEN_PROPERTY, TaskPhase, TaskState,
};
use crate::api::v1alpha1::ProviderKind;
use crate::cloud::allowed;
use crate::egress::{self, Class};
use crate::image_replication::vm::facts::{Check, Cloud, gib, no_encryption, source_name};
use crate::oci::client::{tls_config, urlencode, without_url};
use crate::tasks::{Seen, TaskSet};

/// Glance image members: the image's visibility becomes `shared`, each member is a project
/// id that accepts the share with its own token; at most 128 members per image (Glance's
/// default `image_member_quota`).
pub const SHARING: Sharing = Sharing {
    account_rule: "a Keystone project id (letters, digits, '-' and '_', at most 64)",
    valid_account: |a| {
        (1..=64).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    },
    member_limit: 128,
    limit_source: "Glance's default image_member_quota",
    needs_accept: true,
    // Glance lists a member at once.
    members_lag: 0,
    refuses_encrypted_in_place: false,
};

/// Reports one request: (operation, outcome, seconds).
pub type Observer = Arc<dyn Fn(&'static str, &'static str, f64) + Send + Sync>;

/// Total time of one API call (not of an image stream).
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// A region missing from the cached catalog renews the token (and catalog) at most this often.
const CATALOG_REFRESH: Duration = Duration::from_secs(30);

/// A stream that moves no byte for this long is broken off and the copy fails (and is retried).
const STALL: Duration = Duration::from_secs(300);

/// Glance's own image fields; everything else is a user property.
const CORE: [&str; 27] = [
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "min_ram",
    "min_disk",
    "created_at",
    "updated_at",
    "disk_format",
    "container_format",
    "tags",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "os_hidden",
    "stores",
    "os_glance_failed_import",
    "os_glance_importing_to_stores",
];

pub(crate) struct Session {
    token: String,
    expires: Instant,
    issued: Instant,
    /// (region, interface, url) of image endpoints.
    endpoints: Vec<(String, String, String)>,
}

/// How far an upload stream is (the progress of its task in the operator's one task registry,
/// [`TaskSet`], keyed by the copy's token; its outcome is the verified digest).
#[derive(Default)]
struct Stream {
    done: AtomicU64,
    total: AtomicU64,
    /// Set on cancel: the upload body fails its next chunk, so the HTTP connection (which owns
    /// the body and outlives the aborted task) stops streaming and Glance sees a broken upload
    /// rather than a short, complete one.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

struct Inner {
    http: reqwest::Client,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    streams: TaskSet<String, Stream, String>,
    observer: Option<Observer>,
}

/// The OpenStack image service provider.
#[derive(Clone)]
pub struct OpenStack {
    inner: Arc<Inner>,
}

impl Default for OpenStack {
    fn default() -> Self {
        Self::new(None)
    }
}

fn http_err(op: &str, e: reqwest::Error) -> ProviderError {
    crate::cloud::transport_error(op, e)
}

async fn status_err(op: &str, resp: reqwest::Response) -> ProviderError {
    let code = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = format!("{op}: HTTP {}: {}", code.as_u16(), crate::cloud::short(&body));
    // Glance has no error codes of its own: the HTTP status is the code.
    match code.as_u16() {
        404 => ProviderError::not_found(msg),
        408 | 409 | 429 | 500..=599 => ProviderError::transient(msg),
        _ => ProviderError::permanent(msg),
    }
    .with_code(code.as_str())
}

fn image_state(status: &str) -> ImageState {
    match status {
        "active" => ImageState::Available,
        "queued" | "saving" | "importing" | "uploading" => ImageState::Creating,
        other => ImageState::Unusable(other.to_string()),
    }
}

/// Parse a Glance v2 image document.
pub fn parse_image(v: &Value) -> ImageInfo {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let mut properties = BTreeMap::new();
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            if CORE.contains(&k.as_str()) {
                continue;
            }
            if let Some(t) = val.as_str() {
                properties.insert(k.clone(), t.to_string());
            }
        }
    }
    let encrypted =
        properties.contains_key("cinder_encryption_key_id") || properties.contains_key("img_encryption_format");
    // What a copy must keep for instances booted from it to fit and to be found as the
    // source is. Not carried: `protected` (the operator must be able to replace and delete its
    // copies) and `visibility: public` (Glance's publicize_image policy is admin-only).
    let mut carried = BTreeMap::new();
    for k in ["min_disk", "min_ram", "os_hidden", "tags"] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            carried.insert(k.to_string(), x.clone());
        }
    }
    if let Some(vis) = s("visibility").filter(|v| v != "public") {
        carried.insert("visibility".to_string(), json!(vis));
    }
    ImageInfo {
        id: s("id").unwrap_or_default(),
        name: s("name").unwrap_or_default(),
        size_bytes: v.get("size").and_then(Value::as_u64),
        disk_format: s("disk_format"),
        container_format: s("container_format"),
        visibility: s("visibility").unwrap_or_default(),
        encrypted: Some(encrypted),
        state: s("status").map(|st| image_state(&st)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: false,
        digest: match (s("os_hash_algo"), s("os_hash_value")) {
            (Some(a), Some(h)) => Some(format!("{a}:{h}")),
            _ => None,
        },
        checksum: s("checksum"),
        properties,
        created_at: s("created_at"),
        carried,
    }
}

/// Whether two images hold the same bytes, by the strongest digest both have.
fn same_content(src: &ImageInfo, dst: &ImageInfo) -> Result<String, String> {
    match (&src.digest, &dst.digest, &src.checksum, &dst.checksum) {
        (Some(a), Some(b), _, _) if a == b => Ok(b.clone()),
        (Some(a), Some(b), _, _) => Err(format!("destination digest {b} differs from the source's {a}")),
        (_, _, Some(a), Some(b)) if a == b => Ok(format!("md5:{b}")),
        (_, _, Some(a), Some(b)) => Err(format!("destination checksum {b} differs from the source's {a}")),
        _ => match (src.size_bytes, dst.size_bytes) {
            (Some(a), Some(b)) if a == b => Ok(format!("size:{b}")),
            (a, b) => Err(format!("cannot verify: no digest, sizes {a:?} and {b:?}")),
        },
    }
}

impl OpenStack {
    pub fn new(observer: Option<Observer>) -> Self {
        let tls = tls_config(None).expect("TLS with the system roots");
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            // No read timeout: an upload of a large image waits minutes for its response. API
            // calls carry a total timeout; streams are watched for progress instead.
            .tcp_keepalive(Duration::from_secs(30));
        let http = egress::guard(builder, Class::Cloud, 5).build().expect("HTTP client");
        Self {
            inner: Arc::new(Inner {
                http,
                sessions: Mutex::new(HashMap::new()),
                // The engine polls a stream; its end needs no wake-up.
                streams: TaskSet::new(Arc::new(|_: &str| {})),
                observer,
            }),
        }
    }

    fn observe(&self, op: &'static str, started: Instant, outcome: &'static str) {
        if let Some(o) = &self.inner.observer {
            o(op, outcome, started.elapsed().as_secs_f64());
        }
    }

    /// A Keystone token and catalog for the account, cached until shortly before expiry.
    async fn session(&self, acct: &Account) -> Result<Arc<Session>, ProviderError> {
        let auth_url = acct.text("authUrl").ok_or_else(|| {
            ProviderError::permanent("the credentials Secret has no authUrl (the Keystone v3 URL)".to_string())
        })?;
        let mut fp = sha2::Sha256::new();
        for (k, v) in &acct.secret {
            fp.update(k.as_bytes());
            fp.update([0]);
            fp.update(v);
            fp.update([0]);
        }
        let key = crate::oci::api::hex(&fp.finalize());
        if let Some(s) = self.inner.sessions.lock().expect("sessions").get(&key)
            && s.expires > Instant::now()
        {
            return Ok(s.clone());
        }
        let identity = match (
            acct.text("applicationCredentialId"),
            acct.text("applicationCredentialSecret"),
        ) {
            (Some(id), Some(secret)) => json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret}}}}),
            _ => {
                let (Some(user), Some(password)) = (acct.text("username"), acct.text("password")) else {
                    return Err(ProviderError::permanent(
                        "the credentials Secret needs username and password, or applicationCredentialId and applicationCredentialSecret",
                    ));
                };
                let user_domain = acct.text("userDomainName").unwrap_or_else(|| "Default".into());
                let project = match (acct.text("projectId"), acct.text("projectName")) {
                    (Some(id), _) => json!({"id": id}),
                    (None, Some(name)) => {
                        json!({"name": name, "domain": {"name": acct.text("projectDomainName").unwrap_or_else(|| "Default".into())}})
                    }
                    (None, None) => {
                        return Err(ProviderError::permanent(
                            "the credentials Secret needs projectName or projectId for password authentication",
                        ));
                    }
                };
                json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"name": user_domain}, "password": password}}},
                    "scope": {"project": project}}})
            }
        };
        let url = format!("{}/auth/tokens", auth_url.trim_end_matches('/'));
        let url = if url.contains("/v3/") {
            url
        } else {
            url.replace("/auth/tokens", "/v3/auth/tokens")
        };
        allowed("Keystone authentication", &url)?;
        let started = Instant::now();
        let resp = self
            .inner
            .http
            .post(&url)
            .timeout(API_TIMEOUT)
            .json(&identity)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.observe("authenticate", started, "error");
                return Err(http_err("Keystone authentication", e));
            }
        };
        if !resp.status().is_success() {
            self.observe("authenticate", started, "rejected");
            let code = resp.status().as_u16();
            // Never echo Keystone's body: it may repeat what was sent.
            return Err(if code == 401 || code == 403 {
                ProviderError::auth(format!("Keystone refused the credentials (HTTP {code})"))
            } else if code >= 500 {
                ProviderError::transient(format!("Keystone authentication: HTTP {code}"))
            } else {
                ProviderError::permanent(format!("Keystone authentication: HTTP {code}"))
            });
        }
        self.observe("authenticate", started, "ok");
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| ProviderError::transient("Keystone answered without X-Subject-Token"))?;
        let body: Value = resp.json().await.map_err(|e| http_err("Keystone token body", e))?;
        let session = Arc::new(parse_token(&token, &body));
        self.inner
            .sessions
            .lock()
            .expect("sessions")
            .insert(key, session.clone());
        Ok(session)
    }

    fn forget_session(&self) {
        self.inner.sessions.lock().expect("sessions").clear();
    }

    /// The Glance endpoint of a region: the spec's endpoint override (`{region}` replaced), or
    /// the catalog's image endpoint for the region and interface.
    fn endpoint(&self, acct: &Account, s: &Session, region: &str) -> Result<String, ProviderError> {
        let base = if let Some(e) = &acct.endpoint {
            e.replace("{region}", region)
        } else {
            let iface = acct.text("interface").unwrap_or_else(|| "public".into());
            s.endpoints
                .iter()
                .find(|(r, i, _)| r == region && *i == iface)
                .map(|(_, _, u)| u.clone())
                .ok_or_else(|| {
                    let mut regions: Vec<&str> = Vec::new();
                    for (r, _, _) in &s.endpoints {
                        if !regions.contains(&r.as_str()) {
                            regions.push(r);
                        }
                    }
                    ProviderError::setup(format!(
                        "the Keystone catalog has no {iface} image endpoint in region {region} (regions: {})",
                        regions.join(", ")
                    ))
                })?
        };
        let base = base.trim_end_matches('/');
        Ok(base.strip_suffix("/v2").unwrap_or(base).to_string())
    }

    /// One Glance request with the account's token; a 401 renews the token once.
    async fn glance(
        &self,
        op: &'static str,
        acct: &Account,
        region: &str,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<reqwest::Response, ProviderError> {
        for attempt in 0..2 {
            let s = self.session(acct).await?;
            let base = match self.endpoint(acct, &s, region) {
                Ok(b) => b,
                // A region or endpoint added to Keystone since the token was issued: the cached
                // catalog is renewed once (a new token, at most every 30 s) before the miss counts.
                Err(_) if attempt == 0 && acct.endpoint.is_none() && s.issued.elapsed() > CATALOG_REFRESH => {
                    self.forget_session();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let url = format!("{base}{path}");
            allowed(op, &url)?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .timeout(API_TIMEOUT)
                .header("X-Auth-Token", &s.token);
            if let Some((ct, b)) = &body {
                req = req.header("Content-Type", *ct).body(b.clone());
            }
            let started = Instant::now();
            match req.send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && attempt == 0 => {
                    self.observe(op, started, "unauthorized");
                    self.forget_session();
                }
                Ok(r) => {
                    let outcome = match r.status().as_u16() {
                        200..=299 => "ok",
                        404 => "not_found",
                        400..=499 => "client_error",
                        _ => "server_error",
                    };
                    self.observe(op, started, outcome);
                    return Ok(r);
                }
                Err(e) => {
                    self.observe(op, started, "error");
                    return Err(http_err(op, e));
                }
            }
        }
        Err(ProviderError::permanent(format!(
            "{op}: Glance rejected a fresh token (HTTP 401)"
        )))
    }

    async fn get_image(&self, acct: &Account, region: &str, id: &str) -> Result<ImageInfo, ProviderError> {
        Ok(parse_image(&self.get_raw(acct, region, id).await?))
    }

    /// Whether the image is not `shared` (so Glance keeps no members for it); a gone image
    /// has none either.
    async fn not_shared(&self, acct: &Account, at: &ImageAt) -> Result<bool, ProviderError> {
        match self.get_image(acct, &at.region, &at.image_id).await {
            Ok(i) => Ok(i.visibility != "shared"),
            Err(e) if e.not_found => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn get_raw(&self, acct: &Account, region: &str, id: &str) -> Result<Value, ProviderError> {
        let r = self
            .glance(
                "get_image",
                acct,
                region,
                Method::GET,
                &format!("/v2/images/{}", urlencode(id)),
                None,
            )
            .await?;
        if !r.status().is_success() {
            return Err(status_err(&format!("image {id} in {region}"), r).await);
        }
        r.json().await.map_err(|e| http_err("image document", e))
    }

    async fn list(&self, acct: &Account, region: &str, query: &str) -> Result<Vec<ImageInfo>, ProviderError> {
        let mut out = Vec::new();
        let mut path = format!("/v2/images?limit=100&{query}");
        loop {
            let r = self
                .glance("list_images", acct, region, Method::GET, &path, None)
                .await?;
            if !r.status().is_success() {
                return Err(status_err(&format!("listing images in {region}"), r).await);
            }
            let v: Value = r.json().await.map_err(|e| http_err("image list", e))?;
            out.extend(
                v.get("images")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(parse_image),
            );
            match v.get("next").and_then(Value::as_str) {
                Some(next) if out.len() < 10_000 => path = next.to_string(),
                _ => return Ok(out),
            }
        }
    }

    /// Images matching `query`, hidden ones (`os_hidden`) included: Glance lists them only
    /// when asked with `os_hidden=true`, and then only them. `first_only`: the query names at
    /// most one image (a token), so the hidden ones are asked for only when no visible matches.
    async fn list_all(
        &self,
        acct: &Account,
        region: &str,
        query: &str,
        first_only: bool,
    ) -> Result<Vec<ImageInfo>, ProviderError> {
        let mut found = self.list(acct, region, query).await?;
        if first_only && !found.is_empty() {
            return Ok(found);
        }
        for i in self.list(acct, region, &format!("{query}&os_hidden=true")).await? {
            if !found.iter().any(|f| f.id == i.id) {
                found.push(i);
            }
        }
        Ok(found)
    }

    async fn find_by_token(
        &self,
        acct: &Account,
        region: &str,
        token: &str,
    ) -> Result<Option<ImageInfo>, ProviderError> {
        let mut found = self
            .list_all(acct, region, &format!("{TOKEN_PROPERTY}={}", urlencode(token)), true)
            .await?;
        found.retain(|i| i.properties.get(TOKEN_PROPERTY).map(String::as_str) == Some(token));
        Ok(found.into_iter().next())
    }

    async fn delete(&self, acct: &Account, region: &str, id: &str) -> Result<(), ProviderError> {
        let r = self
            .glance(
                "delete_image",
                acct,
                region,
                Method::DELETE,
                &format!("/v2/images/{}", urlencode(id)),
                None,
            )
            .await?;
        match r.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(status_err("Glance", r).await),
        }
    }

    /// A Glance JSON request with the account's token; the answer's status is checked
    /// (`ok`: also accepted, e.g. 409 for a member that exists).
    async fn call(
        &self,
        op: &'static str,
        acct: &Account,
        region: &str,
        (method, path): (Method, &str),
        body: Option<(&'static str, Value)>,
        ok: &[u16],
    ) -> Result<Option<Value>, ProviderError> {
        let body = body.map(|(ct, v)| (ct, serde_json::to_vec(&v).expect("json")));
        let r = self.glance(op, acct, region, method, path, body).await?;
        let code = r.status().as_u16();
        if ok.contains(&code) {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(status_err(&format!("{op} in {region}"), r).await);
        }
        Ok(r.json().await.ok())
    }

    async fn create(&self, acct: &Account, req: &CopyRequest) -> Result<String, ProviderError> {
        let src = &req.source;
        let mut doc = serde_json::Map::new();
        for (k, v) in &src.properties {
            if !k.starts_with("imgrep_") {
                doc.insert(k.clone(), json!(v));
            }
        }
        doc.insert("name".into(), json!(req.name));
        if let Some(f) = &src.disk_format {
            doc.insert("disk_format".into(), json!(f));
        }
        if let Some(f) = &src.container_format {
            doc.insert("container_format".into(), json!(f));
        }
        if let Some(d) = &req.description {
            doc.insert("description".into(), json!(d));
        }
        for (k, v) in &src.carried {
            doc.insert(k.clone(), v.clone());
        }
        // Glance makes a new image `shared` unless told; a copy of a public source (whose
        // visibility is not carried) is private. Sharing it makes it `shared`.
        doc.entry("visibility").or_insert(json!("private"));
        // The source's tags, then the spec's (as key=value).
        let mut tags: Vec<String> = src
            .carried
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        for t in req
            .tags
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
        {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        doc.insert("tags".into(), json!(tags));
        doc.insert(TOKEN_PROPERTY.into(), json!(req.token));
        doc.insert("imgrep_source_region".into(), json!(req.source_region));
        doc.insert("imgrep_region".into(), json!(req.region));
        doc.insert("imgrep_source_image".into(), json!(src.id));
        let body = serde_json::to_vec(&Value::Object(doc)).expect("json");
        let r = self
            .glance(
                "create_image",
                acct,
                &req.region,
                Method::POST,
                "/v2/images",
                Some(("application/json", body)),
            )
            .await?;
        if !r.status().is_success() {
            return Err(status_err(&format!("creating the image in {}", req.region), r).await);
        }
        let v: Value = r.json().await.map_err(|e| http_err("created image", e))?;
        Ok(parse_image(&v).id)
    }

    /// Start (or restart) the background stream of `req` into destination image `dest_id`.
    fn spawn_worker(&self, acct: &Account, req: &CopyRequest, dest_id: &str) -> Arc<Stream> {
        if let Some(w) = self.inner.streams.progress(&req.token) {
            return w;
        }
        let w = Arc::new(Stream::default());
        w.total.store(req.source.size_bytes.unwrap_or(0), Ordering::Relaxed);
        let (me, acct, r, dest_id, w2) = (self.clone(), acct.clone(), req.clone(), dest_id.to_string(), w.clone());
        let work = async move {
            let out = me.stream(&acct, &r, &dest_id, &w2).await;
            if out.is_err() {
                // A failed stream leaves nothing behind: the next attempt makes a new image.
                let _ = me.delete(&acct, &r.region, &dest_id).await;
            }
            out.map_err(|m| ("StreamFailed".to_string(), m))
        };
        if self
            .inner
            .streams
            .start(req.token.clone(), &req.token, false, w.clone(), work)
        {
            w
        } else {
            // Started meanwhile by another reconcile: that one's progress.
            self.inner.streams.progress(&req.token).unwrap_or(w)
        }
    }

    async fn stream(&self, acct: &Account, req: &CopyRequest, dest_id: &str, w: &Stream) -> Result<String, String> {
        let src = &req.source;
        let s = self.session(acct).await.map_err(|e| e.message)?;
        let src_url = format!(
            "{}/v2/images/{}/file",
            self.endpoint(acct, &s, &req.source_region).map_err(|e| e.message)?,
            urlencode(&src.id)
        );
        let dst_url = format!(
            "{}/v2/images/{}/file",
            self.endpoint(acct, &s, &req.region).map_err(|e| e.message)?,
            urlencode(dest_id)
        );
        allowed("reading the source image", &src_url).map_err(|e| e.message)?;
        allowed("writing the copy", &dst_url).map_err(|e| e.message)?;
        let started = Instant::now();
        let resp = self
            .inner
            .http
            .get(&src_url)
            .header("X-Auth-Token", &s.token)
            .send()
            .await
            .map_err(|e| http_err("reading the source image", e).message)?;
        if !resp.status().is_success() {
            self.observe("download_image", started, "client_error");
            return Err(format!("reading the source image: HTTP {}", resp.status().as_u16()));
        }
        if let Some(len) = resp.content_length() {
            w.total.store(len, Ordering::Relaxed);
        }
        let counter = Arc::new(AtomicU64::new(0));
        let c2 = counter.clone();
        let cancelled = w.cancelled.clone();
        let done = &w.done;
        done.store(0, Ordering::Relaxed);
        let body = resp.bytes_stream().map(move |chunk| {
            if cancelled.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("copy cancelled"));
            }
            let chunk = chunk.map_err(std::io::Error::other);
            if let Ok(b) = &chunk {
                c2.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let upload = self
            .inner
            .http
            .put(&dst_url)
            .header("X-Auth-Token", &s.token)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        tokio::pin!(upload);
        let mut last = (0u64, Instant::now());
        let resp = loop {
            tokio::select! {
                r = &mut upload => break r,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let n = counter.load(Ordering::Relaxed);
                    done.store(n, Ordering::Relaxed);
                    if n != last.0 {
                        last = (n, Instant::now());
                    } else if last.1.elapsed() > STALL {
                        w.cancelled.store(true, Ordering::Relaxed);
                        return Err(format!("no data moved for {} s; the stream was broken off", STALL.as_secs()));
                    }
                }
            }
        };
        done.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
        let resp = resp.map_err(|e| format!("uploading to {}: {}", req.region, without_url(&e)))?;
        if !resp.status().is_success() {
            self.observe("upload_image", started, "server_error");
            return Err(format!("uploading to {}: HTTP {}", req.region, resp.status().as_u16()));
        }
        self.observe("upload_image", started, "ok");
        let dst = self
            .get_image(acct, &req.region, dest_id)
            .await
            .map_err(|e| e.message)?;
        if dst.state != Some(ImageState::Available) {
            return Err(format!(
                "destination image {dest_id} is {:?} after the upload",
                dst.state
            ));
        }
        same_content(src, &dst).map_err(|e| format!("verification failed: {e}"))
    }
}

pub(crate) fn parse_token(token: &str, body: &Value) -> Session {
    let expires = body
        .pointer("/token/expires_at")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| {
            let left = t.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
            // Renew five minutes early; never cache for less than ten seconds.
            Duration::from_secs((left - 300).max(10) as u64)
        })
        .unwrap_or(Duration::from_secs(600));
    let mut endpoints = Vec::new();
    for svc in body
        .pointer("/token/catalog")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if svc.get("type").and_then(Value::as_str) != Some("image") {
            continue;
        }
        for e in svc.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
            let g = |k: &str| e.get(k).and_then(Value::as_str).map(String::from);
            if let (Some(region), Some(iface), Some(url)) = (g("region_id").or(g("region")), g("interface"), g("url")) {
                endpoints.push((region, iface, url));
            }
        }
    }
    Session {
        issued: Instant::now(),
        token: token.to_string(),
        expires: Instant::now() + expires,
        endpoints,
    }
}

impl Service for OpenStack {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openstack
    }

    fn can_cancel(&self) -> bool {
        true
    }

    async fn describe(&self, acct: &Account, region: &str, image: &ImageSelector) -> Result<ImageInfo, ProviderError> {
        match image {
            ImageSelector::Id(id) => self.get_image(acct, region, id).await,
            ImageSelector::Name(name) => {
                let found = self
                    .list_all(acct, region, &format!("name={}", urlencode(name)), false)
                    .await?;
                match found.len() {
                    0 => Err(ProviderError::not_found(format!("no image named {name:?} in {region}"))),
                    1 => Ok(found.into_iter().next().expect("one")),
                    n => Err(ProviderError::permanent(format!(
                        "{n} images are named {name:?} in {region} ({}); use source.imageId",
                        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        }
    }

    /// Every active image the token's project sees (its own, shared with it, public).
    async fn candidates(&self, acct: &Account, region: &str, _pattern: &str) -> Result<Vec<ImageInfo>, ProviderError> {
        self.list_all(acct, region, "status=active", false).await
    }

    async fn start_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let id = match self.find_by_token(acct, &req.region, &req.token).await? {
            Some(existing) => existing.id,
            None => self.create(acct, req).await?,
        };
        self.spawn_worker(acct, req, &id);
        Ok(CopyHandle {
            task_id: Some(req.token.clone()),
            image_id: Some(id),
        })
    }

    async fn find_copy(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        Ok(self
            .find_by_token(acct, &req.region, &req.token)
            .await?
            .map(|i| CopyHandle {
                task_id: Some(req.token.clone()),
                image_id: Some(i.id),
            }))
    }

    async fn poll(&self, acct: &Account, req: &CopyRequest, handle: &CopyHandle) -> Result<TaskState, ProviderError> {
        let Some(dest_id) = handle.image_id.clone() else {
            return Err(ProviderError::not_found("the copy has no destination image"));
        };
        let state = |phase, done: Option<u64>, total: Option<u64>, digest| TaskState {
            phase,
            image_id: Some(dest_id.clone()),
            progress_percent: match (done, total) {
                (Some(d), Some(t)) if t > 0 => Some((d * 100 / t).min(99) as i32),
                _ => None,
            },
            bytes_done: done,
            bytes_total: total,
            digest,
            restarted: false,
        };
        if let Some(w) = self.inner.streams.progress(&req.token) {
            let (done, total) = (w.done.load(Ordering::Relaxed), w.total.load(Ordering::Relaxed));
            let seen = self.inner.streams.collect_one(&req.token, |seen| match seen {
                Seen::Running { .. } => state(TaskPhase::Running, Some(done), Some(total), None),
                Seen::Finished {
                    outcome: Ok(digest), ..
                } => TaskState {
                    progress_percent: Some(100),
                    ..state(TaskPhase::Succeeded, Some(total), Some(total), Some(digest))
                },
                Seen::Finished {
                    outcome: Err((_, m)), ..
                } => state(TaskPhase::Failed(m), Some(done), Some(total), None),
            });
            if let Some(s) = seen {
                return Ok(s);
            }
        }
        // No stream in this process (the operator restarted): ask Glance.
        let raw = self.get_raw(acct, &req.region, &dest_id).await?;
        let dst = parse_image(&raw);
        let status = raw.get("status").and_then(Value::as_str).unwrap_or("");
        Ok(match dst.state {
            Some(ImageState::Available) => match same_content(&req.source, &dst) {
                Ok(d) => state(TaskPhase::Succeeded, dst.size_bytes, dst.size_bytes, Some(d)),
                Err(e) => state(TaskPhase::Failed(format!("verification failed: {e}")), None, None, None),
            },
            Some(ImageState::Creating) if status == "queued" => {
                // `queued`: nothing is uploading; start the stream again into the same image.
                let w = self.spawn_worker(acct, req, &dest_id);
                tracing::info!(region = %req.region, image = %dest_id, "restarted the upload from the start (Glance cannot resume one)");
                TaskState {
                    restarted: true,
                    ..state(
                        TaskPhase::Running,
                        Some(w.done.load(Ordering::Relaxed)),
                        req.source.size_bytes,
                        None,
                    )
                }
            }
            Some(ImageState::Creating) => {
                // Glance is still taking an upload (one this process no longer drives); an
                // interrupted upload turns the image back to `queued`.
                state(TaskPhase::Running, None, req.source.size_bytes, None)
            }
            other => state(
                TaskPhase::Failed(format!("destination image is {other:?}")),
                None,
                None,
                None,
            ),
        })
    }

    async fn cancel(&self, acct: &Account, region: &str, handle: &CopyHandle) -> Result<(), ProviderError> {
        if let Some(token) = &handle.task_id
            && self
                .inner
                .streams
                .cancel_one(token, |w| w.cancelled.store(true, Ordering::Relaxed))
        {
            tracing::info!(region, token = %token, "stopped the upload stream");
        }
        let id = match (&handle.image_id, &handle.task_id) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(token)) => self.find_by_token(acct, region, token).await?.map(|i| i.id),
            _ => None,
        };
        match id {
            Some(id) => self.delete(acct, region, &id).await,
            None => Ok(()),
        }
    }

    async fn delete_image(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<(), ProviderError> {
        self.delete(acct, region, image_id).await
    }

    async fn image_exists(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<bool, ProviderError> {
        match self.get_image(acct, region, image_id).await {
            Ok(i) => Ok(!matches!(i.state, Some(ImageState::Unusable(_)))),
            Err(e) if e.not_found => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/images/{id}/members`: each member project and its status. Glance refuses the
    /// list (403) for an image that is not `shared` (private, public, community): such an
    /// image has no members, and `share` makes a private one shared first.
    async fn members(&self, acct: &Account, at: &ImageAt) -> Result<Vec<Member>, ProviderError> {
        let path = format!("/v2/images/{}/members", urlencode(&at.image_id));
        match self
            .call("list_members", acct, &at.region, (Method::GET, &path), None, &[])
            .await
        {
            Ok(v) => Ok(glance_members(&v.unwrap_or_default())),
            Err(e) if e.is("403") && self.not_shared(acct, at).await? => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Make the image `shared` if it is private (members are only for shared images), then
    /// `POST /v2/images/{id}/members` (409: already a member).
    async fn share(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let (region, id) = (at.region.as_str(), urlencode(&at.image_id));
        let image = self.get_image(acct, region, &at.image_id).await?;
        if image.visibility == "private" {
            let patch = json!([{"op": "replace", "path": "/visibility", "value": "shared"}]);
            self.call(
                "share_image",
                acct,
                region,
                (Method::PATCH, &format!("/v2/images/{id}")),
                Some(("application/openstack-images-v2.1-json-patch", patch)),
                &[],
            )
            .await?;
        } else if image.visibility != "shared" {
            // Public and community images are open to every project already; Glance keeps
            // members only for shared images. Said once, not retried: it cannot change by itself.
            return Err(ProviderError::permanent(format!(
                "image {} is {}: every project can use it already, and Glance keeps members only for shared images; remove shareWith, or make the image private to share it with chosen projects",
                at.image_id, image.visibility
            )));
        }
        let body = json!({"member": account});
        let path = format!("/v2/images/{id}/members");
        self.call(
            "add_member",
            acct,
            region,
            (Method::POST, &path),
            Some(("application/json", body)),
            &[409],
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /v2/images/{id}/members/{member}` (404: not a member, or no image; 403 for an
    /// image that is not `shared`: it has no members, so there is nothing to withdraw).
    async fn unshare(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let path = format!("/v2/images/{}/members/{}", urlencode(&at.image_id), urlencode(account));
        match self
            .call("remove_member", acct, &at.region, (Method::DELETE, &path), None, &[404])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is("403") && self.not_shared(acct, at).await? => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// As the member, with its own token: `PUT /v2/images/{id}/members/{member}` accepted.
    async fn accept(&self, member: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let path = format!("/v2/images/{}/members/{}", urlencode(&at.image_id), urlencode(account));
        let body = json!({"status": "accepted"});
        self.call(
            "accept_member",
            member,
            &at.region,
            (Method::PUT, &path),
            Some(("application/json", body)),
            &[],
        )
        .await
        .map(|_| ())
    }
}

// ---------- the cloud's facts ----------

/// OpenStack's facts (see [`Cloud`]): the registry's one line for it. Its endpoints are each
/// deployment's own: none is allowed by default (`--egress-cloud-hosts`).
pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Openstack,
    service,
    sharing: &SHARING,
    hosts: &[],
    source_rules,
    default_name: source_name,
    spec_rules: no_encryption,
    free_form_regions: true,
    fields: &[],
    other_owner: Some("this cloud's copies belong to the provider's account; share them with shareWith instead"),
    identity: None,
    moves_bytes: true,
};

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(OpenStack::default())
}

/// OpenStack: the disk formats and the size this operator is configured to refuse.
pub fn source_rules(c: &mut Check<'_>) {
    let source = c.source;
    let limits = c.limits;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    if let Some(f) = source.disk_format.as_deref()
        && limits
            .openstack_refused_formats
            .iter()
            .any(|r| r.eq_ignore_ascii_case(f))
    {
        c.refuse(
            src_field.into(),
            "DiskFormatNotReplicable",
            format!(
                "{img} has disk format {f}; this operator is configured to refuse {} images for cross-region copies (--openstack-refused-disk-formats)",
                f
            ),
        );
    }
    if size > limits.openstack_max_bytes {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; this operator copies OpenStack images up to {} (--openstack-max-image-bytes)",
                gib(size),
                gib(limits.openstack_max_bytes)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_glance_images() {
        let v = json!({"id": "i1", "name": "web", "status": "saving", "visibility": "private", "size": 42,
            "disk_format": "qcow2", "container_format": "bare", "os_hash_algo": "sha512", "os_hash_value": "ab",
            "checksum": "cd", "os_distro": "debian", "tags": ["x"], "min_disk": 0});
        let i = parse_image(&v);
        assert_eq!(i.state, Some(ImageState::Creating));
        assert_eq!(i.digest.as_deref(), Some("sha512:ab"));
        assert_eq!(i.properties.get("os_distro").map(String::as_str), Some("debian"));
        assert!(!i.properties.contains_key("status"));
        assert_eq!(image_state("deactivated"), ImageState::Unusable("deactivated".into()));
    }

    #[test]
    fn verification_uses_the_strongest_digest() {
        let a = ImageInfo {
            digest: Some("sha512:aa".into()),
            checksum: Some("m1".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(same_content(&a, &b).unwrap(), "sha512:aa");
        b.digest = Some("sha512:bb".into());
        assert!(same_content(&a, &b).unwrap_err().contains("differs"));
        let (mut c, mut d) = (a.clone(), a.clone());
        c.digest = None;
        d.digest = None;
        assert_eq!(same_content(&c, &d).unwrap(), "md5:m1");
    }

    #[test]
    fn catalog_and_expiry() {
        let body = json!({"token": {"expires_at": "2099-01-01T00:00:00.000000Z", "catalog": [
            {"type": "identity", "endpoints": [{"region_id": "r1", "interface": "public", "url": "http://k"}]},
            {"type": "image", "endpoints": [
                {"region_id": "r1", "interface": "public", "url": "http://g1:9292/"},
                {"region_id": "r2", "interface": "internal", "url": "http://g2:9292/v2"}]}]}});
        let s = parse_token("t", &body);
        assert_eq!(s.endpoints.len(), 2);
        assert!(s.expires > Instant::now() + Duration::from_secs(3600));
        let os = OpenStack::default();
        let acct = Account::default();
        assert_eq!(os.endpoint(&acct, &s, "r1").unwrap(), "http://g1:9292");
        assert!(
            os.endpoint(&acct, &s, "r2")
                .unwrap_err()
                .message
                .contains("no public image endpoint in region r2")
        );
        let mut acct = Account::default();
        acct.secret.insert("interface".into(), b"internal".to_vec());
        assert_eq!(os.endpoint(&acct, &s, "r2").unwrap(), "http://g2:9292");
        acct.endpoint = Some("http://glance.{region}.example:9292/v2/".into());
        assert_eq!(os.endpoint(&acct, &s, "r9").unwrap(), "http://glance.r9.example:9292");
    }
}
