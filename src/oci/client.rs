//! A client for the OCI Distribution API (and Docker Registry v2): anonymous, basic and bearer
//! token auth (the `WWW-Authenticate` challenge flow), TLS with a custom CA, retries with
//! exponential backoff and jitter on 5xx, connection errors and 429 (honouring `Retry-After`),
//! and one shared request budget per registry host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Semaphore;

use super::reference::RegistryAddr;
use crate::egress::{self, Class};

/// Errors of registry operations. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{op}: HTTP {status}: {message}")]
    Http {
        op: &'static str,
        status: u16,
        /// The registry's error code (the first `errors[].code`, e.g. `BLOB_UPLOAD_UNKNOWN`):
        /// decisions read this, never the message.
        code: Option<String>,
        message: String,
    },
    #[error("{op}: {message}")]
    Transport { op: &'static str, message: String },
    #[error("{what}: digest mismatch: expected {expected}, got {got}")]
    DigestMismatch {
        what: String,
        expected: String,
        got: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The egress policy refused the URL; nothing was sent.
    #[error("{0}")]
    Refused(crate::egress::Refusal),
}

impl OciError {
    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status == 429 || *status >= 500,
            Self::Transport { .. } => true,
            _ => false,
        }
    }
    /// A fixed CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Http { status: 404, .. } => "NotFound",
            Self::Http { status: 401 | 403, .. } | Self::Auth(_) => "Unauthorized",
            Self::Http { status: 429, .. } => "RateLimited",
            Self::Http { .. } => "RegistryError",
            Self::Transport { .. } => "ConnectionError",
            Self::DigestMismatch { .. } => "DigestMismatch",
            Self::Unsupported(_) => "Unsupported",
            Self::Refused(_) => "EgressRefused",
        }
    }
}

/// Credentials for one registry, from a Secret (`username`, `password`, `ca.crt`).
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM of a CA that signs the registry's certificate.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// Retry settings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured; longer waits fail the request so the caller can requeue.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n` (1-based retry count): exponential with full jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16)).min(self.max_delay);
        let jitter = jitter_fraction();
        exp.mul_f64(0.5 + jitter / 2.0)
    }
}

fn jitter_fraction() -> f64 {
    // Cheap per-call randomness without a dependency: the low bits of the clock.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n % 1000) as f64 / 1000.0
}

/// Parse a `Retry-After` header: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = httpdate_to_unix(v.trim())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

fn httpdate_to_unix(s: &str) -> Option<u64> {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).ok()
}

/// The request budget of one registry host, shared by every object that talks to it.
///
/// A 429 makes the request that got it wait its `Retry-After` and try again; the others go on
/// (a registry that limits a whole client answers them 429 too, and they wait in turn). Pausing
/// every request to the host on each 429 made a fleet sync through a registry answering 5 % of
/// requests 429 about 25 times slower.
pub struct HostBudget {
    permits: Semaphore,
}

impl HostBudget {
    fn new(concurrent: usize) -> Self {
        Self {
            permits: Semaphore::new(concurrent.max(1)),
        }
    }
}

/// Receives (operation, outcome, seconds) for every registry request, for metrics.
pub type Observer = Arc<dyn Fn(&'static str, &'static str, f64) + Send + Sync>;

/// Budgets for every host, shared across all objects of the operator, and the clients built on
/// them: one client per (registry, credentials) is reused by every copy and sync, keeping its
/// connections, bearer tokens and TLS setup.
pub struct Budgets {
    per_host: usize,
    map: Mutex<HashMap<String, Arc<HostBudget>>>,
    observer: Option<Observer>,
    clients: Mutex<HashMap<String, Arc<Registry>>>,
}

impl Budgets {
    /// `per_host` requests in flight at once per registry host.
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host,
            map: Mutex::new(HashMap::new()),
            observer: None,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Per registry host with any: (blob uploads restarted from byte 0, upload sessions given
    /// up that the registry would not cancel), over every client built on these budgets.
    pub fn upload_trouble(&self) -> Vec<(String, u64, u64)> {
        let mut by_host: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for r in self.clients.lock().expect("clients lock").values() {
            let (restarts, left) = (
                r.stats.upload_restarts.load(Ordering::Relaxed),
                r.stats.sessions_left.load(Ordering::Relaxed),
            );
            if restarts + left > 0 {
                let e = by_host.entry(r.addr.host.clone()).or_default();
                e.0 += restarts;
                e.1 += left;
            }
        }
        by_host.into_iter().map(|(h, (r, l))| (h, r, l)).collect()
    }

    /// The shared client for a registry and credentials (built on first use).
    pub fn registry(&self, addr: &RegistryAddr, creds: Credentials) -> Result<Arc<Registry>, OciError> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [
            creds.username.as_deref().unwrap_or(""),
            creds.password.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(creds.ca_pem.as_deref().unwrap_or(&[]));
        let key = format!("{}|{}", addr.url(), super::digest::hex(&h.finalize()));
        if let Some(r) = self.clients.lock().expect("clients lock").get(&key) {
            return Ok(r.clone());
        }
        let r = Arc::new(Registry::new(addr.clone(), creds, self)?);
        Ok(self
            .clients
            .lock()
            .expect("clients lock")
            .entry(key)
            .or_insert(r)
            .clone())
    }
    /// Report every request to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }
    pub fn for_host(&self, host: &str) -> Arc<HostBudget> {
        self.map
            .lock()
            .expect("budget lock")
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(HostBudget::new(self.per_host)))
            .clone()
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Self::new(16)
    }
}

/// Counters of what a client did, for reports, metrics and tests.
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    /// Blob uploads started again from byte 0.
    pub upload_restarts: AtomicU64,
    /// Upload sessions given up that the registry would not cancel.
    pub sessions_left: AtomicU64,
}

/// A client for one registry.
pub struct Registry {
    pub addr: RegistryAddr,
    http: reqwest::Client,
    creds: Credentials,
    tokens: Mutex<HashMap<String, String>>,
    use_basic: AtomicBool,
    budget: Arc<HostBudget>,
    observer: Option<Observer>,
    pub retry: RetryPolicy,
    pub stats: Stats,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parse `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (
                &q[..end],
                q[end + 1..].trim_start().trim_start_matches(',').trim_start(),
            )
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n.trim_start()),
                None => (after, ""),
            }
        };
        params.insert(k.trim().to_ascii_lowercase(), v.to_string());
        rest = next;
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

pub(crate) fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    // The system store is read from disk once per process.
    static NATIVE: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    let mut roots = NATIVE
        .get_or_init(|| {
            let mut r = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = r.add(cert);
            }
            r
        })
        .clone();
    if let Some(pem) = ca_pem {
        use rustls_pki_types::pem::PemObject;
        let mut n = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(|e| format!("ca.crt: {e}"))?)
                .map_err(|e| format!("ca.crt: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("ca.crt holds no PEM certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A whole request body, cloned cheaply for retries.
pub type Body = Option<Bytes>;

impl Registry {
    /// A client for `addr` drawing on the host's shared budget.
    pub fn new(addr: RegistryAddr, creds: Credentials, budgets: &Budgets) -> Result<Self, OciError> {
        let tls = tls_config(creds.ca_pem.as_deref())
            .map_err(|e| OciError::Unsupported(format!("TLS setup for {addr}: {e}")))?;
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32);
        let http = egress::guard(builder, Class::Registry, 5)
            .build()
            .map_err(|e| OciError::Unsupported(format!("HTTP client for {addr}: {e}")))?;
        Ok(Self {
            budget: budgets.for_host(&addr.host),
            observer: budgets.observer.clone(),
            addr,
            http,
            creds,
            tokens: Mutex::new(HashMap::new()),
            use_basic: AtomicBool::new(false),
            retry: RetryPolicy::default(),
            stats: Stats::default(),
        })
    }

    /// Absolute URL for a path or an upload `Location` (which may be relative).
    pub fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_string()
        } else {
            format!("{}{}", self.addr.url(), path_or_location)
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let u = self.creds.username.as_deref()?;
        let p = self.creds.password.as_deref().unwrap_or("");
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let mut h = HeaderValue::from_str(&format!("Basic {v}")).ok()?;
        h.set_sensitive(true);
        Some(h)
    }

    async fn fetch_token(&self, ch: &Challenge, scope: &str) -> Result<String, OciError> {
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| OciError::Auth("bearer challenge without realm".into()))?;
        let sep = if realm.contains('?') { '&' } else { '?' };
        let mut url = format!("{realm}{sep}scope={}", urlencode(scope));
        if let Some(s) = ch.params.get("service") {
            url.push_str(&format!("&service={}", urlencode(s)));
        }
        egress::current()
            .check_url(Class::Registry, &url)
            .map_err(OciError::Refused)?;
        let mut req = self.http.get(url);
        if let Some(b) = self.basic_header() {
            req = req.header(reqwest::header::AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|e| match egress::refusal_in(&e) {
            Some(r) => OciError::Refused(r),
            None => OciError::Auth(format!("token request to {realm}: {}", without_url(&e))),
        })?;
        if !resp.status().is_success() {
            return Err(OciError::Auth(format!(
                "token endpoint {realm} answered {}",
                resp.status()
            )));
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| OciError::Auth(format!("token response: {e}")))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(String::from)
            .ok_or_else(|| OciError::Auth("token response without token".into()))
    }

    /// The Authorization header for a scope: a cached bearer token, or basic credentials once
    /// the registry asked for them.
    fn auth_header(&self, scope: &str) -> Option<HeaderValue> {
        if let Some(tok) = self.tokens.lock().expect("token lock").get(scope) {
            let mut h = HeaderValue::from_str(&format!("Bearer {tok}")).ok()?;
            h.set_sensitive(true);
            return Some(h);
        }
        if self.use_basic.load(Ordering::Relaxed) {
            return self.basic_header();
        }
        None
    }

    /// Send one request whose body is a stream: auth from the cache (the upload session that
    /// precedes it has already answered any challenge), the host budget, and no retries — a
    /// stream cannot be replayed; the caller asks for the upload status and resumes.
    pub async fn send_streaming(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<Response, OciError> {
        egress::current()
            .check_url(Class::Registry, url)
            .map_err(OciError::Refused)?;
        let _permit = self.budget.permits.acquire().await.expect("semaphore never closed");
        let mut req = self.http.request(method, url).headers(headers).body(body);
        if let Some(h) = self.auth_header(scope) {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = req.send().await;
        if let Some(observe) = &self.observer {
            observe(op, outcome_of(&result), started.elapsed().as_secs_f64());
        }
        result.map_err(|e| match egress::refusal_in(&e) {
            Some(r) => OciError::Refused(r),
            None => OciError::Transport {
                op,
                message: without_url(&e),
            },
        })
    }

    /// Send one request with auth, the host budget and retries. `scope` is the token scope,
    /// e.g. `repository:team/web:pull`. Non-success statuses other than the retried ones are
    /// returned to the caller to interpret.
    pub async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, OciError> {
        egress::current()
            .check_url(Class::Registry, url)
            .map_err(OciError::Refused)?;
        let mut attempt = 0;
        let mut authed_once = false;
        loop {
            let permit = self.budget.permits.acquire().await.expect("semaphore never closed");
            let mut req = self.http.request(method.clone(), url).headers(headers.clone());
            if let Some(h) = self.auth_header(scope) {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = req.send().await;
            drop(permit);
            if let Some(observe) = &self.observer {
                observe(op, outcome_of(&result), started.elapsed().as_secs_f64());
            }
            let retry_in = match result {
                Err(e) => {
                    if let Some(r) = egress::refusal_in(&e) {
                        return Err(OciError::Refused(r));
                    }
                    let message = without_url(&e);
                    if attempt + 1 >= self.retry.max_attempts {
                        return Err(OciError::Transport { op, message });
                    }
                    self.retry.delay(attempt)
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authed_once => {
                    authed_once = true;
                    let ch = resp
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    match ch {
                        Some(ch) if ch.scheme == "bearer" => {
                            let tok = self.fetch_token(&ch, scope).await?;
                            self.tokens.lock().expect("token lock").insert(scope.to_string(), tok);
                        }
                        Some(ch) if ch.scheme == "basic" && self.creds.username.is_some() => {
                            self.use_basic.store(true, Ordering::Relaxed);
                        }
                        _ => return Ok(resp),
                    }
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after)
                        .unwrap_or_else(|| self.retry.delay(attempt));
                    if attempt + 1 >= self.retry.max_attempts || wait > self.retry.max_retry_after {
                        return Ok(resp);
                    }
                    // This request waits; the others to the host go on.
                    wait
                }
                Ok(resp) if resp.status().is_server_error() && attempt + 1 < self.retry.max_attempts => {
                    self.retry.delay(attempt)
                }
                Ok(resp) => return Ok(resp),
            };
            attempt += 1;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(retry_in).await;
        }
    }
}

/// The `outcome` label of a request for metrics.
fn outcome_of(result: &Result<Response, reqwest::Error>) -> &'static str {
    match result {
        Err(_) => "transport_error",
        Ok(r) if r.status().is_success() || r.status().is_redirection() => "success",
        Ok(r) if r.status().as_u16() == 429 => "rate_limited",
        Ok(r) if r.status().as_u16() == 404 => "not_found",
        Ok(r) if r.status().is_client_error() => "client_error",
        Ok(_) => "server_error",
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A reqwest error's text with its causes. The URLs this client builds never carry secrets
/// (tokens and passwords travel in headers only).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Turn a non-success response into an error naming the registry host and carrying the
/// registry's own message (its first `errors[]` entry, else the start of the body, else the
/// status's reason phrase — never an empty "HTTP 401: ").
pub async fn expect_status(op: &'static str, resp: Response, ok: &[u16]) -> Result<Response, OciError> {
    let status = resp.status();
    if ok.contains(&status.as_u16()) {
        return Ok(resp);
    }
    let host = match (resp.url().host_str(), resp.url().port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let text = resp.text().await.unwrap_or_default();
    let code = registry_code(&text);
    let said = registry_message(&text).unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_string());
    let message = if host.is_empty() {
        said
    } else {
        format!("{host}: {said}")
    };
    Err(OciError::Http {
        op,
        status: status.as_u16(),
        code,
        message,
    })
}

/// The code of the first `errors[]` entry of a registry's error body.
fn registry_code(text: &str) -> Option<String> {
    let v = serde_json::from_str::<serde_json::Value>(text).ok()?;
    let code = v.get("errors")?.as_array()?.first()?.get("code")?.as_str()?;
    // A code is a short upper-case word (the distribution spec's list); anything else is prose.
    let word = !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    word.then(|| code.to_string())
}

/// The registry's message in an error body: `CODE message` of the first `errors[]` entry, else
/// the first 200 characters of a non-empty body.
fn registry_message(text: &str) -> Option<String> {
    let from_json = serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| {
        v.get("errors")?.as_array()?.first().map(|e| {
            let part = |k: &str| e.get(k).and_then(|c| c.as_str()).unwrap_or("").to_string();
            format!("{} {}", part("code"), part("message")).trim().to_string()
        })
    });
    from_json
        .filter(|m| !m.is_empty())
        .or_else(|| Some(text.trim().chars().take(200).collect::<String>()).filter(|m| !m.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).unwrap().scheme,
            "basic"
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_messages_carry_what_the_registry_said() {
        let said = |t: &str| registry_message(t);
        assert_eq!(
            said(r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid"}]}"#).as_deref(),
            Some("BLOB_UPLOAD_INVALID blob upload invalid")
        );
        assert_eq!(said(r#"{"errors":[{"code":"DENIED"}]}"#).as_deref(), Some("DENIED"));
        assert_eq!(said("upstream timed out\n").as_deref(), Some("upstream timed out"));
        // Nothing said: the caller falls back to the status's reason phrase.
        assert_eq!(said(""), None);
        assert_eq!(said(r#"{"errors":[]}"#).as_deref(), Some(r#"{"errors":[]}"#));
    }

    /// Decisions read the registry's code, never its words: a message that mentions a code is
    /// not that code, and a "code" that is prose is none.
    #[test]
    fn the_error_code_is_the_registrys_code_field() {
        let code = |t: &str| registry_code(t);
        assert_eq!(
            code(r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}"#).as_deref(),
            Some("BLOB_UPLOAD_UNKNOWN")
        );
        assert_eq!(
            code(r#"{"errors":[{"code":"UNKNOWN","message":"BLOB_UPLOAD_UNKNOWN"}]}"#).as_deref(),
            Some("UNKNOWN")
        );
        assert_eq!(code("BLOB_UPLOAD_UNKNOWN: upload gone"), None);
        assert_eq!(code(r#"{"errors":[{"code":"not a code, a sentence"}]}"#), None);
        assert_eq!(code(r#"{"errors":[]}"#), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for n in 0..20 {
            assert!(p.delay(n) <= p.max_delay);
        }
        assert!(p.delay(0) >= Duration::from_millis(100));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: Some("u".into()),
            password: Some("s3cret".into()),
            ca_pem: None,
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
