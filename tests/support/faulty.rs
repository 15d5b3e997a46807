//! A proxy in front of a real registry that injects faults the engine must survive or report:
//! corrupted blob bytes, 429 with Retry-After, connections cut in the middle of a blob, and
//! refused upload chunks; or, with `Fault::Random`, all of them at fixed rates from a seed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Flip one byte of every blob body.
    CorruptBlobs,
    /// Answer the first `n` manifest requests with 429 and `Retry-After: 1`.
    RateLimitManifests(usize),
    /// Cut the first `n` full blob GETs after `after` bytes.
    CutBlobs { n: usize, after: usize },
    /// Answer the first `n` upload PATCHes with 503 without passing them on (the registry
    /// holds nothing of them).
    FailPatches(usize),
    /// Hold every upload PATCH this many milliseconds before passing it on (so transfers
    /// overlap and `FaultyProxy::patch_peak` shows how many ran at once).
    SlowPatches(u64),
    /// Answer the first `n` manifest GETs with 400 (an error no retry of that request cures).
    FailManifestGets(usize),
    /// A bearer-token gate: 401 with a Bearer challenge unless `Authorization: Bearer <token>`;
    /// `/token` hands the token out for basic credentials `user:pass`.
    RequireBearer {
        user: &'static str,
        pass: &'static str,
        token: &'static str,
    },
    /// Per request, drawn from `seed` and the request's number: `p503` answered 503 and `p429`
    /// 429 with `Retry-After: 1` (neither passed on); of the rest, `cut_upload` of PATCHes pass
    /// half their body on and then lose the connection, and `cut_response` of GETs with a body
    /// lose the connection half-way through the answer.
    Random {
        seed: u64,
        p503: f64,
        p429: f64,
        cut_response: f64,
        cut_upload: f64,
    },
}

/// A number in [0, 1) from a seed, a request number and a salt (splitmix64).
fn draw(seed: u64, n: u64, salt: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Lose the client's connection now: the handler's task ends without an answer (no panic
/// message: `resume_unwind` skips the hook).
fn cut_connection() -> ! {
    std::panic::resume_unwind(Box::new("connection cut by the test proxy"))
}

/// A request the proxy saw: method, uri, Range header, status answered (0: the connection was
/// cut after half the request body was passed on; 1: the answer was cut half-way).
pub type Seen = (String, String, Option<String>, u16);

pub struct FaultyProxy {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Request body bytes received (all methods): what crossed towards the registry.
    pub body_bytes: Arc<AtomicU64>,
    /// The most upload PATCHes the proxy was handling at one time.
    pub patch_peak: Arc<AtomicUsize>,
}

/// Counts a PATCH in flight while it lives, raising the peak.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(now: &Arc<AtomicUsize>, peak: &AtomicUsize) -> Self {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        Self(now.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultyProxy {
    pub async fn start(upstream: String, fault: Fault) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(rustls_config())
            .build()
            .unwrap();
        let s2 = seen.clone();
        let body_bytes = Arc::new(AtomicU64::new(0));
        let bb = body_bytes.clone();
        let (patch_now, patch_peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (pn, pp) = (patch_now.clone(), patch_peak.clone());
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (client, upstream, seen, counter) = (client.clone(), upstream.clone(), s2.clone(), counter.clone());
            let body_bytes = bb.clone();
            let (patch_now, patch_peak) = (pn.clone(), pp.clone());
            async move {
                let _in_flight = (method == Method::PATCH).then(|| InFlight::enter(&patch_now, &patch_peak));
                if let Fault::SlowPatches(ms) = fault
                    && method == Method::PATCH
                {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                let range = headers.get("range").and_then(|v| v.to_str().ok()).map(String::from);
                let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                let record = |status: u16| {
                    seen.lock()
                        .unwrap()
                        .push((method.to_string(), path.clone(), range.clone(), status))
                };
                if let Fault::RequireBearer { user, pass, token } = fault {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if path.starts_with("/token") {
                        use base64::Engine as _;
                        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                        let ok = auth == format!("Basic {basic}");
                        record(if ok { 200 } else { 401 });
                        let (status, body) = if ok {
                            (200, format!(r#"{{"token":"{token}"}}"#))
                        } else {
                            (401, String::new())
                        };
                        return Response::builder().status(status).body(Body::from(body)).unwrap();
                    }
                    if auth != format!("Bearer {token}") {
                        record(401);
                        let host = headers
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let ch = format!(
                            r#"Bearer realm="http://{host}/token",service="test-registry",scope="repository:x:pull""#
                        );
                        return Response::builder()
                            .status(401)
                            .header("WWW-Authenticate", ch)
                            .body(Body::empty())
                            .unwrap();
                    }
                }
                if let Fault::FailPatches(n) = fault
                    && method == Method::PATCH
                    && counter.fetch_add(1, Ordering::SeqCst) < n
                {
                    record(503);
                    return Response::builder().status(503).body(Body::empty()).unwrap();
                }
                if let Fault::FailManifestGets(n) = fault
                    && method == Method::GET
                    && path.contains("/manifests/")
                    && counter.fetch_add(1, Ordering::SeqCst) < n
                {
                    record(400);
                    return Response::builder()
                        .status(400)
                        .body(Body::from(
                            r#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#,
                        ))
                        .unwrap();
                }
                if let Fault::RateLimitManifests(n) = fault
                    && path.contains("/manifests/")
                    && counter.fetch_add(1, Ordering::SeqCst) < n
                {
                    record(429);
                    return rate_limited();
                }
                let mut cut_response = false;
                let mut body = body;
                let mut cut_after_upload = false;
                if let Fault::Random {
                    seed,
                    p503,
                    p429,
                    cut_response: p_cut,
                    cut_upload,
                } = fault
                {
                    let n = counter.fetch_add(1, Ordering::SeqCst) as u64;
                    let r = draw(seed, n, 1);
                    if r < p503 {
                        record(503);
                        return Response::builder().status(503).body(Body::empty()).unwrap();
                    }
                    if r < p503 + p429 {
                        record(429);
                        return rate_limited();
                    }
                    if method == Method::PATCH && body.len() > 1 && draw(seed, n, 2) < cut_upload {
                        body = body.slice(..body.len() / 2);
                        cut_after_upload = true;
                    }
                    cut_response = method == Method::GET && draw(seed, n, 3) < p_cut;
                }
                let mut req = client
                    .request(method.clone(), format!("{upstream}{path}"))
                    .body(body.to_vec());
                for (k, v) in headers.iter() {
                    let partial = cut_after_upload && (k == "content-length" || k == "content-range");
                    if k != "host" && !partial {
                        req = req.header(k, v);
                    }
                }
                let resp = req.send().await.unwrap();
                if cut_after_upload {
                    // The registry got half the body; the client gets no answer.
                    let _ = resp.bytes().await;
                    record(0);
                    cut_connection();
                }
                let status = resp.status().as_u16();
                let half = resp.content_length().map(|l| l as usize / 2).filter(|h| *h > 0);
                // A cut answer is recorded as status 1.
                record(if cut_response && half.is_some() { 1 } else { status });
                let mut out = Response::builder().status(StatusCode::from_u16(status).unwrap());
                for (k, v) in resp.headers().iter() {
                    if k == "location" {
                        // Keep uploads going through the proxy.
                        let loc = v.to_str().unwrap().replace(&upstream, "");
                        out = out.header(k, loc);
                    } else {
                        out = out.header(k, v);
                    }
                }
                let is_blob_get = method == Method::GET && path.contains("/blobs/sha256:");
                match fault {
                    Fault::Random { .. } if cut_response && half.is_some() => {
                        out.body(cut_after(resp, half.unwrap_or_default())).unwrap()
                    }
                    Fault::CorruptBlobs if is_blob_get => {
                        let mut b = resp.bytes().await.unwrap().to_vec();
                        let mid = b.len() / 2;
                        if let Some(x) = b.get_mut(mid) {
                            *x ^= 0xff;
                        }
                        out.body(Body::from(b)).unwrap()
                    }
                    Fault::CutBlobs { n, after }
                        if is_blob_get
                            && range.is_none()
                            && resp.content_length().is_some_and(|l| l as usize > after)
                            && counter.fetch_add(1, Ordering::SeqCst) < n =>
                    {
                        out.body(cut_after(resp, after)).unwrap()
                    }
                    _ => out.body(Body::from_stream(resp.bytes_stream())).unwrap(),
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            port,
            seen,
            body_bytes,
            patch_peak,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// 429 with `Retry-After: 1`, not passed on.
fn rate_limited() -> Response {
    Response::builder()
        .status(429)
        .header("Retry-After", "1")
        .body(Body::empty())
        .unwrap()
}

/// The answer's body, ending in an error (a lost connection) after `after` bytes.
fn cut_after(resp: reqwest::Response, after: usize) -> Body {
    let mut sent = 0usize;
    Body::from_stream(resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if sent >= after {
            return Err(std::io::Error::other("connection cut by the test proxy"));
        }
        let take = chunk.len().min(after - sent);
        sent += take;
        Ok(chunk.slice(..take))
    }))
}

fn rustls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}
