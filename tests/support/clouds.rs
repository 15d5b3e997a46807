//! HTTP stand-ins for the Huawei Cloud IMS, Alibaba Cloud ECS and AWS EC2 image APIs, following
//! their published request and response shapes: paths and actions, bodies, error codes, and the
//! asynchronous copy lifecycle with progress. Every request's signature is checked (a bad one is
//! answered as the cloud does: 401 / SignatureDoesNotMatch / AuthFailure) after recomputing it
//! from the request as received, and every request is logged for the tests to inspect.
//!
//! One stand-in serves all regions of a provider (the endpoint override has no `{region}`); the
//! region comes from where the provider carries it: Huawei's `X-Project-Id` (project `p-<name>`,
//! region = the project name up to `_`), Alibaba's `RegionId`, AWS's credential scope.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use image_replication_operator::cloud::sign;
use serde_json::{Value, json};

use super::fake_apiserver::percent_decode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Huawei,
    Alibaba,
    Aws,
    Tencent,
    /// Tencent Container Registry (API 3.0, service `tcr`).
    Tcr,
}

pub const AK: &str = "AKTESTSTANDIN";
pub const SK: &str = "sk/test+standin=";

/// An image held by the stand-in.
#[derive(Clone, Debug)]
pub struct Img {
    pub id: String,
    pub region: String,
    pub project: String,
    pub name: String,
    pub description: String,
    pub size_gib: u64,
    /// Provider fields (visibility, disk format, ...), in the provider's own words.
    pub extra: Value,
    pub tags: BTreeMap<String, String>,
    /// A copy: ready `copy_for` after `created`; `None`: ready now.
    pub copy: Option<(Instant, Duration)>,
    pub encrypted: bool,
    pub snapshots: Vec<String>,
    /// Wall-clock creation time (Unix seconds).
    pub created_unix: i64,
}

impl Img {
    /// 0..=100 while a copy runs, 100 when ready.
    pub fn progress(&self) -> u32 {
        match self.copy {
            None => 100,
            Some((t, d)) => ((t.elapsed().as_secs_f64() / d.as_secs_f64().max(0.001)) * 100.0).min(100.0) as u32,
        }
    }
    pub fn ready(&self) -> bool {
        self.progress() >= 100
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// Query or form parameters (Alibaba, AWS) or the JSON body's fields (Huawei), flattened.
    pub params: BTreeMap<String, String>,
    pub body: Value,
    pub headers: BTreeMap<String, String>,
    /// The query as sent (pairs, decoded) and the body as sent.
    pub query: Vec<(String, String)>,
    pub raw_body: String,
    pub status: u16,
    /// The answer's body, as given.
    pub response: String,
    /// Answered with the provider's throttling error.
    pub throttled: bool,
    /// Rejected for a bad signature.
    pub bad_signature: bool,
}

impl Req {
    pub fn action(&self) -> &str {
        self.params.get("Action").map(String::as_str).unwrap_or("")
    }
}

/// A TCR replica: (primary id, replica id, region, region id, created).
pub type TcrReplica = (String, String, String, i64, Instant);

#[derive(Default)]
pub struct State {
    pub images: Mutex<Vec<Img>>,
    pub requests: Mutex<Vec<Req>>,
    /// Answer this many next requests as throttled.
    pub throttle: AtomicU32,
    /// How long a copy into a region takes (default 1 s).
    pub copy_time: Mutex<HashMap<String, Duration>>,
    /// Hold the answer to the next copy request this long (after the copy was created).
    pub hold_copy_answer: Mutex<Option<Duration>>,
    /// Huawei jobs: job id -> (source image id, destination image id).
    pub jobs: Mutex<HashMap<String, (String, String)>>,
    /// Tencent: snapshots deleted with their images (DeleteBindedSnap).
    pub deleted_snapshots: Mutex<Vec<String>>,
    /// AWS and Alibaba: ClientToken -> image id.
    pub client_tokens: Mutex<HashMap<String, String>>,
    /// TCR: instances (id, region, type).
    pub tcr_instances: Mutex<Vec<(String, String, String)>>,
    /// TCR: replicas (primary id, replica id, region, region id, created).
    pub tcr_replicas: Mutex<Vec<TcrReplica>>,
    /// TCR: the replication log; DescribeReplicationInstanceSyncStatus returns the last entry.
    pub tcr_log: Mutex<Vec<Value>>,
    /// TCR: when the last CreateReplicationInstance was accepted (1 request/s allowed).
    pub tcr_last_create: Mutex<Option<Instant>>,
    seq: AtomicU32,
}

pub struct Stand {
    pub kind: Kind,
    pub url: String,
    pub state: Arc<State>,
}

impl Stand {
    pub async fn start(kind: Kind) -> Self {
        let state = Arc::new(State::default());
        let st = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { handle(kind, &st, method, uri, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { kind, url, state }
    }

    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{:04}", self.state.seq.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Add a ready image.
    pub fn add(&self, region: &str, name: &str, size_gib: u64, extra: Value) -> String {
        let id = match self.kind {
            Kind::Huawei => format!(
                "4f3b5c2e-0000-4000-8000-{:012}",
                self.state.seq.fetch_add(1, Ordering::SeqCst) + 1
            ),
            Kind::Alibaba => self.next_id("m-src"),
            Kind::Aws => self.next_id("ami-0src"),
            Kind::Tencent | Kind::Tcr => self.next_id("img-src"),
        };
        self.state.images.lock().unwrap().push(Img {
            id: id.clone(),
            region: region.into(),
            project: region.into(),
            name: name.into(),
            description: String::new(),
            size_gib,
            extra,
            tags: BTreeMap::new(),
            copy: None,
            encrypted: false,
            snapshots: vec![self.next_id("snap-")],
            created_unix: now_unix(),
        });
        id
    }

    pub fn set_copy_time(&self, region: &str, d: Duration) {
        self.state.copy_time.lock().unwrap().insert(region.into(), d);
    }

    pub fn images_in(&self, region: &str) -> Vec<Img> {
        self.state
            .images
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.region == region)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Hold every request this stand-in received and every answer it gave to the cloud's
    /// official SDK (`tests/conformance/sdk_check.py`): operations, parameters, body fields and
    /// answer fields must be the API's own. Panics with the violations.
    pub fn assert_conforms(&self) {
        let kind = match self.kind {
            Kind::Huawei => "huawei",
            Kind::Alibaba => "alibaba",
            Kind::Aws => "aws",
            Kind::Tencent => "cvm",
            Kind::Tcr => "tcr",
        };
        let exchanges: Vec<Value> = self
            .requests()
            .iter()
            .map(|r| {
                json!({"kind": kind, "method": r.method, "path": r.path, "query": r.query, "headers": r.headers,
                    "body": r.raw_body, "status": r.status, "response": r.response, "bad_signature": r.bad_signature})
            })
            .collect();
        super::conformance::check_exchanges(&exchanges);
    }

    /// Requests whose action (Alibaba, AWS) is `what`, or whose `METHOD path` (Huawei) contains it.
    pub fn calls(&self, what: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.action() == what || format!("{} {}", r.method, r.path).contains(what))
            .collect()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn copy_time(st: &State, region: &str) -> Duration {
    st.copy_time
        .lock()
        .unwrap()
        .get(region)
        .copied()
        .unwrap_or(Duration::from_secs(1))
}

fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn auth_field<'a>(auth: &'a str, name: &str) -> Option<&'a str> {
    auth.split([' ', ','])
        .map(str::trim)
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
}

async fn handle(kind: Kind, st: &State, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query = parse_pairs(uri.query().unwrap_or(""));
    let hdr: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let (mut params, json_body): (BTreeMap<String, String>, Value) = match kind {
        Kind::Huawei => (
            query.iter().cloned().collect(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ),
        Kind::Alibaba => (query.iter().cloned().collect(), Value::Null),
        Kind::Tencent | Kind::Tcr => (
            [(
                "Action".to_string(),
                hdr.get("x-tc-action").cloned().unwrap_or_default(),
            )]
            .into_iter()
            .collect(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ),
        Kind::Aws => (
            parse_pairs(std::str::from_utf8(&body).unwrap_or(""))
                .into_iter()
                .collect(),
            Value::Null,
        ),
    };
    if let Some(o) = json_body.as_object() {
        for (k, v) in o {
            params
                .entry(k.clone())
                .or_insert_with(|| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
        }
    }
    let mut rec = Req {
        method: method.to_string(),
        path: uri.path().to_string(),
        params: params.clone(),
        body: json_body.clone(),
        headers: hdr.clone(),
        query: query.clone(),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
        response: String::new(),
        throttled: false,
        bad_signature: false,
    };
    // Logged on arrival (a held answer is still seen), completed with the outcome.
    let idx = {
        let mut r = st.requests.lock().unwrap();
        r.push(rec.clone());
        r.len() - 1
    };
    let resp = if let Some(bad) = check_signature(kind, &method, &uri, &query, &hdr, &body) {
        rec.bad_signature = true;
        bad
    } else if st
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        rec.throttled = true;
        throttled(kind)
    } else {
        match kind {
            Kind::Huawei => huawei(st, &method, uri.path(), &params, &json_body, &hdr).await,
            Kind::Alibaba => alibaba(st, &params).await,
            Kind::Aws => aws(st, &params, &hdr).await,
            Kind::Tencent => tencent(st, &json_body, &hdr).await,
            Kind::Tcr => tcr(st, &json_body, &hdr).await,
        }
    };
    rec.status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    rec.response = String::from_utf8_lossy(&bytes).into_owned();
    st.requests.lock().unwrap()[idx] = rec;
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn check_signature(
    kind: Kind,
    method: &Method,
    uri: &Uri,
    query: &[(String, String)],
    hdr: &BTreeMap<String, String>,
    body: &[u8],
) -> Option<Response> {
    let auth = hdr.get("authorization").cloned().unwrap_or_default();
    let signed_headers = |list: &str| -> Vec<(String, String)> {
        list.split(';')
            .map(|h| (h.to_string(), hdr.get(h).cloned().unwrap_or_default()))
            .collect()
    };
    match kind {
        Kind::Huawei => {
            let ok = auth.starts_with("SDK-HMAC-SHA256 ")
                && auth_field(&auth, "Access") == Some(AK)
                && auth_field(&auth, "SignedHeaders").is_some_and(|l| l.contains("x-sdk-date") && l.contains("host"))
                && {
                    let list = auth_field(&auth, "SignedHeaders").unwrap();
                    let s = sign::huawei(AK, SK, method.as_str(), uri.path(), query, &signed_headers(list), body);
                    auth_field(&auth, "Signature") == Some(s.signature.as_str())
                };
            (!ok).then(|| {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information: verify aksk signature fail"})),
                )
                    .into_response()
            })
        }
        Kind::Alibaba => {
            let p: Vec<(String, String)> = query.to_vec();
            let given = p.iter().find(|(k, _)| k == "Signature").map(|(_, v)| v.clone());
            let s = sign::alibaba_rpc(SK, "GET", &p);
            let ok = p.iter().any(|(k, v)| k == "AccessKeyId" && v == AK)
                && p.iter().any(|(k, v)| k == "SignatureMethod" && v == "HMAC-SHA1")
                && given.as_deref() == Some(s.signature.as_str());
            (!ok).then(|| {
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation.", "RequestId": "r"})),
                )
                    .into_response()
            })
        }
        Kind::Aws => {
            let cred = auth_field(&auth, "Credential").unwrap_or("");
            let parts: Vec<&str> = cred.split('/').collect();
            let ok =
                auth.starts_with("AWS4-HMAC-SHA256 ") && parts.len() == 5 && parts[0] == AK && parts[3] == "ec2" && {
                    let list = auth_field(&auth, "SignedHeaders").unwrap_or("");
                    let date = hdr.get("x-amz-date").cloned().unwrap_or_default();
                    let s = sign::aws_v4(
                        AK,
                        SK,
                        parts[2],
                        "ec2",
                        method.as_str(),
                        uri.path(),
                        query,
                        &signed_headers(list),
                        body,
                        &date,
                    );
                    date.starts_with(parts[1]) && auth_field(&auth, "Signature") == Some(s.signature.as_str())
                };
            (!ok).then(|| {
                aws_error(
                    StatusCode::UNAUTHORIZED,
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                )
            })
        }
        Kind::Tencent | Kind::Tcr => {
            let service = if kind == Kind::Tcr { "tcr" } else { "cvm" };
            // Canonical headers: names and values lower-cased (the API 3.0 signing rules).
            let cred = auth_field(&auth, "Credential").unwrap_or("");
            let parts: Vec<&str> = cred.split('/').collect();
            let list = auth_field(&auth, "SignedHeaders").unwrap_or("");
            let lowered: Vec<(String, String)> = signed_headers(list)
                .into_iter()
                .map(|(k, v)| (k, v.to_ascii_lowercase()))
                .collect();
            let ts: i64 = hdr.get("x-tc-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
            let s = sign::tencent_tc3(AK, SK, service, &lowered, body, ts);
            let ok = auth.starts_with("TC3-HMAC-SHA256 ")
                && parts.len() == 4
                && parts[0] == AK
                && parts[2] == service
                && list.contains("content-type")
                && list.contains("host")
                && auth_field(&auth, "Signature") == Some(s.signature.as_str());
            (!ok).then(|| {
                tc_err(
                    "AuthFailure.SignatureFailure",
                    "The provided credentials could not be validated.",
                )
            })
        }
    }
}

fn throttled(kind: Kind) -> Response {
    match kind {
        Kind::Tencent | Kind::Tcr => tc_err("RequestLimitExceeded", "Your current request times exceed the limit."),
        Kind::Huawei => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error_code": "APIG.0308", "error_msg": "The request is throttled."})),
        )
            .into_response(),
        Kind::Alibaba => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"Code": "Throttling.User", "Message": "Request was denied due to user flow control.", "RequestId": "r"})),
        )
            .into_response(),
        Kind::Aws => aws_error(StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded."),
    }
}

// ---- Huawei IMS ----

fn hw_err(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": msg}}))).into_response()
}

fn hw_image(i: &Img) -> Value {
    let mut v = json!({
        "id": i.id, "name": i.name, "__description": i.description,
        "status": if i.ready() { "active" } else { "saving" },
        "__imagetype": "private", "disk_format": "zvhd2", "visibility": "private",
        "__image_size": (i.size_gib << 30).to_string(), "min_disk": i.size_gib,
        "tags": i.tags.iter().map(|(k, v)| format!("{k}.{v}")).collect::<Vec<_>>(),
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

fn project_region(pid: &str) -> Option<(String, String)> {
    let name = pid.strip_prefix("p-")?;
    Some((name.split('_').next().unwrap_or(name).to_string(), name.to_string()))
}

async fn huawei(
    st: &State,
    method: &Method,
    path: &str,
    params: &BTreeMap<String, String>,
    body: &Value,
    hdr: &BTreeMap<String, String>,
) -> Response {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::GET && path == "/v3/projects" {
        let name = params.get("name").cloned().unwrap_or_default();
        return axum::Json(json!({"projects": [{"id": format!("p-{name}"), "name": name}]})).into_response();
    }
    let Some((region, project)) = hdr.get("x-project-id").and_then(|p| project_region(p)) else {
        return hw_err(StatusCode::BAD_REQUEST, "APIGW.0101", "X-Project-Id is required");
    };
    match (method.clone(), seg.as_slice()) {
        (Method::GET, ["v2", "cloudimages"]) => {
            let imgs = st.images.lock().unwrap();
            let list: Vec<Value> = imgs
                .iter()
                .filter(|i| i.region == region && i.project == project)
                .filter(|i| params.get("id").is_none_or(|x| *x == i.id))
                .filter(|i| params.get("name").is_none_or(|x| *x == i.name))
                // The tag filter is `tag=<key>=<value>`.
                .filter(|i| {
                    params
                        .get("tag")
                        .is_none_or(|t| i.tags.iter().any(|(k, v)| format!("{k}={v}") == *t))
                })
                .map(hw_image)
                .collect();
            axum::Json(json!({"images": list})).into_response()
        }
        (Method::POST, ["v1", "cloudimages", id, "cross_region_copy"]) => {
            for f in ["name", "region", "project_name", "agency_name"] {
                if body.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return hw_err(StatusCode::BAD_REQUEST, "IMG.0001", &format!("{f} is required"));
                }
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == *id && i.region == region)
                .cloned();
            let Some(src) = src else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist");
            };
            // vault_id: required for full-ECS images (CopyImageCrossRegionRequestBody).
            if src.extra.get("__whole_image").and_then(Value::as_str) == Some("true")
                && body.get("vault_id").and_then(Value::as_str).is_none_or(str::is_empty)
            {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0001",
                    "vault_id is required for a full-ECS image",
                );
            }
            let dest_region = body["region"].as_str().unwrap().to_string();
            if dest_region == region {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0204",
                    "The destination region cannot be the source region",
                );
            }
            let in_flight = st.images.lock().unwrap().iter().filter(|i| !i.ready()).count();
            if in_flight >= 5 {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0190",
                    "The number of concurrent replications exceeds the quota (5)",
                );
            }
            let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let new_id = format!("7e1c0d2a-0000-4000-8000-{n:012}");
            let job = format!("ff8080814dbd65d7014dbe0d84db{n:04}");
            st.images.lock().unwrap().push(Img {
                id: new_id.clone(),
                region: dest_region.clone(),
                project: body["project_name"].as_str().unwrap().to_string(),
                name: body["name"].as_str().unwrap().to_string(),
                description: body
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                size_gib: src.size_gib,
                extra: json!({}),
                tags: BTreeMap::new(),
                copy: Some((Instant::now(), copy_time(st, &dest_region))),
                encrypted: false,
                snapshots: vec![],
                created_unix: now_unix(),
            });
            st.jobs.lock().unwrap().insert(job.clone(), (src.id.clone(), new_id));
            hold(st).await;
            axum::Json(json!({"job_id": job})).into_response()
        }
        // ShowJobProgress. Which image `entities.image_id` names is not settled by the SDK: the
        // stand-in names the source image, so the client must find the copy in the destination.
        (Method::GET, ["v1", "cloudimages", "job", job]) => {
            let Some((src_id, img_id)) = st.jobs.lock().unwrap().get(*job).cloned() else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0005", "The job does not exist");
            };
            let img = st.images.lock().unwrap().iter().find(|i| i.id == img_id).cloned();
            let job_json = |status: &str, entities: Value| {
                json!({"status": status, "job_id": job, "job_type": "imsCrossRegionCopyJob",
                    "begin_time": "2026-11-24T08:00:00.000Z", "end_time": "", "entities": entities})
            };
            match img {
                Some(i) if i.ready() => {
                    axum::Json(job_json("SUCCESS", json!({"image_id": src_id, "process_percent": 1.0}))).into_response()
                }
                Some(i) => axum::Json(job_json(
                    "RUNNING",
                    json!({"image_id": src_id, "process_percent": i.progress() as f64 / 100.0}),
                ))
                .into_response(),
                None => {
                    let mut v = job_json("FAIL", json!({"image_id": src_id}));
                    v["fail_reason"] = json!("the destination image was deleted");
                    v["error_code"] = json!("IMG.0103");
                    axum::Json(v).into_response()
                }
            }
        }
        // AddImageTag is POST (a PUT is answered as an unknown API, as the gateway does).
        (Method::POST, ["v2", _pid, "images", id, "tags"]) => {
            let mut imgs = st.images.lock().unwrap();
            let Some(i) = imgs.iter_mut().find(|i| i.id == *id && i.region == region) else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist");
            };
            let (Some(k), Some(v)) = (
                body.pointer("/tag/key").and_then(Value::as_str),
                body.pointer("/tag/value").and_then(Value::as_str),
            ) else {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0001",
                    "tag.key and tag.value are required",
                );
            };
            i.tags.insert(k.into(), v.into());
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::DELETE, ["v2", "images", id]) => {
            let mut imgs = st.images.lock().unwrap();
            let before = imgs.len();
            imgs.retain(|i| !(i.id == *id && i.region == region));
            if imgs.len() == before {
                hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist")
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => hw_err(StatusCode::NOT_FOUND, "APIGW.0101", "The API does not exist"),
    }
}

async fn hold(st: &State) {
    let d = st.hold_copy_answer.lock().unwrap().take();
    if let Some(d) = d {
        tokio::time::sleep(d).await;
    }
}

// ---- Alibaba ECS ----

fn ali_err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"Code": code, "Message": msg, "RequestId": "req-1"})),
    )
        .into_response()
}

fn ali_image(i: &Img) -> Value {
    let mut v = json!({
        "ImageId": i.id, "ImageName": i.name, "Description": i.description, "Size": i.size_gib,
        "Status": if i.ready() { "Available" } else { "Creating" },
        "Progress": format!("{}%", i.progress()), "ImageOwnerAlias": "self", "IsCopied": i.copy.is_some(),
        "DiskDeviceMappings": {"DiskDeviceMapping": [{"Encrypted": i.encrypted, "Size": i.size_gib.to_string()}]},
        "Tags": {"Tag": i.tags.iter().map(|(k, v)| json!({"TagKey": k, "TagValue": v})).collect::<Vec<_>>()},
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

async fn alibaba(st: &State, p: &BTreeMap<String, String>) -> Response {
    let region = p.get("RegionId").cloned().unwrap_or_default();
    if region.is_empty() {
        return ali_err(
            StatusCode::BAD_REQUEST,
            "MissingRegionId",
            "RegionId is mandatory for this action.",
        );
    }
    let tags_of = |p: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        (1..=20)
            .filter_map(|n| {
                Some((
                    p.get(&format!("Tag.{n}.Key"))?.clone(),
                    p.get(&format!("Tag.{n}.Value")).cloned().unwrap_or_default(),
                ))
            })
            .collect()
    };
    match p.get("Action").map(String::as_str).unwrap_or("") {
        "DescribeImages" => {
            let want = tags_of(p);
            let statuses: Vec<&str> = p
                .get("Status")
                .map(|s| s.split(',').collect())
                .unwrap_or_else(|| vec!["Available"]);
            let imgs = st.images.lock().unwrap();
            let list: Vec<Value> = imgs
                .iter()
                .filter(|i| i.region == region)
                .filter(|i| p.get("ImageId").is_none_or(|x| *x == i.id))
                .filter(|i| p.get("ImageName").is_none_or(|x| *x == i.name))
                .filter(|i| want.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
                .map(ali_image)
                .filter(|v| statuses.contains(&v["Status"].as_str().unwrap_or("")))
                .collect();
            axum::Json(json!({"Images": {"Image": list}, "TotalCount": list.len(), "PageNumber": 1, "PageSize": 100, "RegionId": region, "RequestId": "req-1"})).into_response()
        }
        "CopyImage" => {
            let Some(dest) = p.get("DestinationRegionId").cloned() else {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "MissingDestinationRegionId",
                    "DestinationRegionId is mandatory",
                );
            };
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
                .cloned();
            let Some(src) = src else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if !src.ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The specified image is not available.",
                );
            }
            // ClientToken: the same token returns the same copy (idempotence).
            if let Some(t) = p.get("ClientToken")
                && let Some(id) = st.client_tokens.lock().unwrap().get(t).cloned()
            {
                return axum::Json(json!({"ImageId": id, "RequestId": "req-1"})).into_response();
            }
            let tags = tags_of(p);
            if p.keys().any(|k| k.starts_with("Tag.21.")) {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "InvalidTagKey.Malformed",
                    "At most 20 tags are allowed.",
                );
            }
            let encrypted = p.get("Encrypted").map(String::as_str) == Some("true");
            if dest == region && !encrypted {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "InvalidRegionId.Malformed",
                    "The destination region must differ unless the copy is encrypted.",
                );
            }
            let id = format!("m-{}", st.seq.fetch_add(1, Ordering::SeqCst) + 1000);
            st.images.lock().unwrap().push(Img {
                id: id.clone(),
                region: dest.clone(),
                project: dest.clone(),
                name: p.get("DestinationImageName").cloned().unwrap_or_default(),
                description: p.get("DestinationDescription").cloned().unwrap_or_default(),
                size_gib: src.size_gib,
                extra: json!({}),
                tags,
                copy: Some((Instant::now(), copy_time(st, &dest))),
                encrypted,
                snapshots: vec![],
                created_unix: now_unix(),
            });
            if let Some(t) = p.get("ClientToken") {
                st.client_tokens.lock().unwrap().insert(t.clone(), id.clone());
            }
            hold(st).await;
            axum::Json(json!({"ImageId": id, "RequestId": "req-1"})).into_response()
        }
        "CancelCopyImage" => {
            let mut imgs = st.images.lock().unwrap();
            let Some(pos) = imgs
                .iter()
                .position(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
            else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if imgs[pos].ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The image is not being copied.",
                );
            }
            imgs.remove(pos);
            axum::Json(json!({"RequestId": "req-1"})).into_response()
        }
        "DeleteImage" => {
            let mut imgs = st.images.lock().unwrap();
            let Some(pos) = imgs
                .iter()
                .position(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
            else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if !imgs[pos].ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The image is being created.",
                );
            }
            imgs.remove(pos);
            axum::Json(json!({"RequestId": "req-1"})).into_response()
        }
        other => ali_err(
            StatusCode::BAD_REQUEST,
            "InvalidAction.NotFound",
            &format!("{other} is not an action"),
        ),
    }
}

// ---- AWS EC2 ----

fn aws_error(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"),
    )
        .into_response()
}

fn xml_ok(action: &str, inner: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/xml;charset=UTF-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-1</requestId>{inner}</{action}Response>"),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn aws_image(i: &Img) -> String {
    let tags: String = i
        .tags
        .iter()
        .map(|(k, v)| format!("<item><key>{}</key><value>{}</value></item>", esc(k), esc(v)))
        .collect();
    let bdm: String = i
        .snapshots
        .iter()
        .map(|s| format!("<item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>{s}</snapshotId><volumeSize>{}</volumeSize><encrypted>{}</encrypted></ebs></item>", i.size_gib, i.encrypted))
        .collect();
    format!(
        "<item><imageId>{}</imageId><name>{}</name><description>{}</description><imageState>{}</imageState><isPublic>{}</isPublic><blockDeviceMapping>{bdm}</blockDeviceMapping><tagSet>{tags}</tagSet></item>",
        i.id,
        esc(&i.name),
        esc(&i.description),
        if i.ready() { "available" } else { "pending" },
        i.extra.get("isPublic").and_then(Value::as_bool).unwrap_or(false),
    )
}

async fn aws(st: &State, p: &BTreeMap<String, String>, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr
        .get("authorization")
        .and_then(|a| auth_field(a, "Credential"))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("")
        .to_string();
    let list = |prefix: &str| -> Vec<String> {
        (1..=20)
            .filter_map(|n| p.get(&format!("{prefix}.{n}")).cloned())
            .collect()
    };
    match p.get("Action").map(String::as_str).unwrap_or("") {
        "DescribeImages" => {
            let ids = list("ImageId");
            let mut filters: Vec<(String, String)> = Vec::new();
            for n in 1..=10 {
                if let (Some(name), Some(v)) = (
                    p.get(&format!("Filter.{n}.Name")),
                    p.get(&format!("Filter.{n}.Value.1")),
                ) {
                    filters.push((name.clone(), v.clone()));
                }
            }
            let imgs = st.images.lock().unwrap();
            let found: Vec<&Img> = imgs.iter().filter(|i| i.region == region).collect();
            for id in &ids {
                if !found.iter().any(|i| i.id == *id) {
                    return aws_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidAMIID.NotFound",
                        &format!("The image id '[{id}]' does not exist"),
                    );
                }
            }
            let items: String = found
                .iter()
                .filter(|i| ids.is_empty() || ids.contains(&i.id))
                .filter(|i| {
                    filters.iter().all(|(n, v)| match n.strip_prefix("tag:") {
                        Some(k) => i.tags.get(k) == Some(v),
                        None if n == "name" => i.name == *v,
                        None => true,
                    })
                })
                .map(|i| aws_image(i))
                .collect();
            xml_ok("DescribeImages", format!("<imagesSet>{items}</imagesSet>"))
        }
        "CopyImage" => {
            let (Some(src_id), Some(src_region), Some(name)) =
                (p.get("SourceImageId"), p.get("SourceRegion"), p.get("Name"))
            else {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "MissingParameter",
                    "SourceImageId, SourceRegion and Name are required",
                );
            };
            if let Some(t) = p.get("ClientToken")
                && let Some(id) = st.client_tokens.lock().unwrap().get(t).cloned()
            {
                return xml_ok("CopyImage", format!("<imageId>{id}</imageId>"));
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == *src_id && i.region == *src_region)
                .cloned();
            let Some(src) = src else {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidAMIID.NotFound",
                    &format!("The image id '[{src_id}]' does not exist"),
                );
            };
            let mut tags = BTreeMap::new();
            if p.get("TagSpecification.1.ResourceType").map(String::as_str) == Some("image") {
                for n in 1..=20 {
                    if let Some(k) = p.get(&format!("TagSpecification.1.Tag.{n}.Key")) {
                        tags.insert(
                            k.clone(),
                            p.get(&format!("TagSpecification.1.Tag.{n}.Value"))
                                .cloned()
                                .unwrap_or_default(),
                        );
                    }
                }
            }
            let id = format!("ami-0{:016x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0xabc000);
            let snap = format!("snap-0{:016x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0xabc000);
            st.images.lock().unwrap().push(Img {
                id: id.clone(),
                region: region.clone(),
                project: region.clone(),
                name: name.clone(),
                description: p.get("Description").cloned().unwrap_or_default(),
                size_gib: src.size_gib,
                extra: json!({}),
                tags,
                copy: Some((Instant::now(), copy_time(st, &region))),
                encrypted: p.get("Encrypted").map(String::as_str) == Some("true"),
                snapshots: vec![snap],
                created_unix: now_unix(),
            });
            if let Some(t) = p.get("ClientToken") {
                st.client_tokens.lock().unwrap().insert(t.clone(), id.clone());
            }
            hold(st).await;
            xml_ok("CopyImage", format!("<imageId>{id}</imageId>"))
        }
        "CreateTags" => {
            let ids = list("ResourceId");
            let mut imgs = st.images.lock().unwrap();
            for id in &ids {
                let Some(i) = imgs.iter_mut().find(|i| i.id == *id && i.region == region) else {
                    return aws_error(StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound", "not found");
                };
                for n in 1..=20 {
                    if let Some(k) = p.get(&format!("Tag.{n}.Key")) {
                        i.tags
                            .insert(k.clone(), p.get(&format!("Tag.{n}.Value")).cloned().unwrap_or_default());
                    }
                }
            }
            xml_ok("CreateTags", "<return>true</return>".into())
        }
        "DeregisterImage" => {
            let mut imgs = st.images.lock().unwrap();
            let before = imgs.len();
            imgs.retain(|i| !(Some(&i.id) == p.get("ImageId") && i.region == region));
            if imgs.len() == before {
                aws_error(StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound", "not found")
            } else {
                xml_ok("DeregisterImage", "<return>true</return>".into())
            }
        }
        "DeleteSnapshot" => xml_ok("DeleteSnapshot", "<return>true</return>".into()),
        other => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("The action {other} is not valid for this web service."),
        ),
    }
}

// ---- Tencent CVM ----

fn tc_err(code: &str, msg: &str) -> Response {
    axum::Json(json!({"Response": {"Error": {"Code": code, "Message": msg}, "RequestId": "r-1"}})).into_response()
}

fn tc_ok(mut v: Value) -> Response {
    v["RequestId"] = json!("r-1");
    axum::Json(json!({"Response": v})).into_response()
}

fn tc_image(i: &Img) -> Value {
    let created = k8s_openapi::jiff::Timestamp::from_second(i.created_unix).unwrap();
    let mut v = json!({
        "ImageId": i.id, "ImageName": i.name, "ImageDescription": i.description,
        "ImageState": if i.ready() { "NORMAL" } else { "SYNCING" },
        "SyncPercent": i.progress(), "ImageType": "PRIVATE_IMAGE", "ImageSize": i.size_gib,
        "CreatedTime": created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "SnapshotSet": i.snapshots.iter().map(|s| json!({"SnapshotId": s, "DiskUsage": "SYSTEM_DISK", "DiskSize": i.size_gib})).collect::<Vec<_>>(),
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

async fn tencent(st: &State, b: &Value, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr.get("x-tc-region").cloned().unwrap_or_default();
    if hdr.get("x-tc-version").map(String::as_str) != Some("2017-03-12") {
        return tc_err("InvalidParameter", "X-TC-Version must be 2017-03-12");
    }
    let strs = |k: &str| -> Vec<String> {
        b.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    match hdr.get("x-tc-action").map(String::as_str).unwrap_or("") {
        "DescribeImages" => {
            let ids = strs("ImageIds");
            let filter = |name: &str| -> Option<Vec<String>> {
                b.get("Filters")?
                    .as_array()?
                    .iter()
                    .find(|f| f["Name"] == name)
                    .map(|f| {
                        f["Values"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
            };
            let names = filter("image-name");
            let imgs = st.images.lock().unwrap();
            let here: Vec<&Img> = imgs.iter().filter(|i| i.region == region).collect();
            for id in &ids {
                if !here.iter().any(|i| i.id == *id) {
                    return tc_err("InvalidImageId.NotFound", &format!("The image {id} does not exist."));
                }
            }
            let list: Vec<Value> = here
                .iter()
                .filter(|i| ids.is_empty() || ids.contains(&i.id))
                .filter(|i| names.as_ref().is_none_or(|n| n.contains(&i.name)))
                .map(|i| tc_image(i))
                .filter(|v| filter("image-type").is_none_or(|t| t.iter().any(|t| v["ImageType"] == t.as_str())))
                .collect();
            tc_ok(json!({"ImageSet": list, "TotalCount": list.len()}))
        }
        "SyncImages" => {
            let ids = strs("ImageIds");
            let dests = strs("DestinationRegions");
            if ids.len() != 1 || dests.is_empty() {
                return tc_err(
                    "InvalidParameterValue",
                    "one ImageIds and at least one DestinationRegions are required",
                );
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == ids[0] && i.region == region)
                .cloned();
            let Some(src) = src else {
                return tc_err("InvalidImageId.NotFound", "The image does not exist.");
            };
            if !src.ready() {
                return tc_err("InvalidImageId.IncorrectState", "The image is not in the NORMAL state.");
            }
            let encrypt = b.get("Encrypt").and_then(Value::as_bool).unwrap_or(false);
            for d in &dests {
                if d.starts_with("ap-unsupported") {
                    return tc_err(
                        "InvalidRegion.Unavailable",
                        &format!("The region {d} does not support image sync."),
                    );
                }
                if (*d == region) != encrypt {
                    return tc_err(
                        "InvalidParameterValue.InvalidRegion",
                        "custom images sync to other regions; encrypted copies stay in the source region",
                    );
                }
            }
            if b.get("DryRun").and_then(Value::as_bool) == Some(true) {
                return tc_err(
                    "DryRunOperation",
                    "The request would have succeeded, but DryRun was set.",
                );
            }
            let name = b
                .get("ImageName")
                .and_then(Value::as_str)
                .unwrap_or(&src.name)
                .to_string();
            let mut set = Vec::new();
            for d in &dests {
                let id = format!("img-{:08x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0x5e000);
                st.images.lock().unwrap().push(Img {
                    id: id.clone(),
                    region: d.clone(),
                    project: d.clone(),
                    name: name.clone(),
                    description: src.description.clone(),
                    size_gib: src.size_gib,
                    extra: json!({}),
                    tags: BTreeMap::new(),
                    copy: Some((Instant::now(), copy_time(st, d))),
                    encrypted: encrypt,
                    snapshots: vec![format!("snap-{id}")],
                    created_unix: now_unix(),
                });
                set.push(json!({"ImageId": id, "Region": d}));
            }
            hold(st).await;
            if b.get("ImageSetRequired").and_then(Value::as_bool) == Some(true) {
                tc_ok(json!({"ImageSet": set}))
            } else {
                tc_ok(json!({}))
            }
        }
        "DeleteImages" => {
            let ids = strs("ImageIds");
            let mut imgs = st.images.lock().unwrap();
            for id in &ids {
                match imgs.iter().find(|i| i.id == *id && i.region == region) {
                    None => return tc_err("InvalidImageId.NotFound", "The image does not exist."),
                    Some(i) if !i.ready() => {
                        return tc_err("InvalidImageId.IncorrectState", "The image is being synced.");
                    }
                    _ => {}
                }
            }
            // DeleteBindedSnap: the images' snapshots are deleted with them.
            if b.get("DeleteBindedSnap").and_then(Value::as_bool) == Some(true) {
                let snaps = imgs
                    .iter()
                    .filter(|i| ids.contains(&i.id) && i.region == region)
                    .flat_map(|i| i.snapshots.clone());
                st.deleted_snapshots.lock().unwrap().extend(snaps);
            }
            imgs.retain(|i| !(ids.contains(&i.id) && i.region == region));
            tc_ok(json!({}))
        }
        other => tc_err("InvalidAction", &format!("{other} is not an action")),
    }
}

// ---- Tencent TCR ----

/// Region ids TCR reports for replicas (a few, as in Tencent's region list).
fn tcr_region_id(r: &str) -> i64 {
    match r {
        "ap-guangzhou" => 1,
        "ap-shanghai" => 4,
        "ap-hongkong" => 5,
        "ap-beijing" => 8,
        "ap-singapore" => 9,
        "ap-chengdu" => 16,
        _ => 99,
    }
}

async fn tcr(st: &State, b: &Value, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr.get("x-tc-region").cloned().unwrap_or_default();
    if hdr.get("x-tc-version").map(String::as_str) != Some("2019-09-24") {
        return tc_err("InvalidParameter", "X-TC-Version must be 2019-09-24");
    }
    let registry = b.get("RegistryId").and_then(Value::as_str).unwrap_or("").to_string();
    let instance = |id: &str| st.tcr_instances.lock().unwrap().iter().find(|i| i.0 == id).cloned();
    // A replica is Creating for its first second, then Running.
    let replica_json = |r: &TcrReplica| {
        json!({"RegistryId": r.0, "ReplicationRegistryId": r.1, "ReplicationRegionName": r.2,
               "ReplicationRegionId": r.3,
               "Status": if r.4.elapsed() >= Duration::from_secs(1) { "Running" } else { "Creating" },
               "CreatedAt": "2026-11-24T08:00:00Z"})
    };
    match hdr.get("x-tc-action").map(String::as_str).unwrap_or("") {
        "DescribeInstances" => {
            let ids: Vec<String> = b["Registryids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            let list: Vec<Value> = st
                .tcr_instances
                .lock()
                .unwrap()
                .iter()
                .filter(|i| ids.contains(&i.0))
                .map(|i| json!({"RegistryId": i.0, "RegistryName": i.0, "RegionName": i.1, "RegistryType": i.2, "Status": "Running"}))
                .collect();
            tc_ok(json!({"Registries": list, "TotalCount": list.len()}))
        }
        "DescribeReplicationInstances" => {
            if instance(&registry).is_none() {
                return tc_err("ResourceNotFound.TcrResourceNotFound", "The instance does not exist.");
            }
            let list: Vec<Value> = st
                .tcr_replicas
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.0 == registry)
                .map(replica_json)
                .collect();
            tc_ok(json!({"ReplicationRegistries": list, "TotalCount": list.len()}))
        }
        "CreateReplicationInstance" => {
            let Some(i) = instance(&registry) else {
                return tc_err("ResourceNotFound.TcrResourceNotFound", "The instance does not exist.");
            };
            if i.2 != "premium" {
                return tc_err("UnsupportedOperation", "Only premium instances support replication.");
            }
            if i.1 != region {
                return tc_err("InvalidParameter", "X-TC-Region must be the instance's region.");
            }
            {
                let mut last = st.tcr_last_create.lock().unwrap();
                if last.is_some_and(|t| t.elapsed() < Duration::from_millis(950)) {
                    return tc_err(
                        "RequestLimitExceeded",
                        "CreateReplicationInstance allows 1 request per second.",
                    );
                }
                *last = Some(Instant::now());
            }
            let name = b
                .get("ReplicationRegionName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name == "ap-nanjing" {
                return tc_err(
                    "UnsupportedOperation",
                    "Replication to this region is not supported for the instance.",
                );
            }
            if name.is_empty() || name == i.1 {
                return tc_err(
                    "InvalidParameterValue",
                    "The replica region must differ from the instance's.",
                );
            }
            let mut reps = st.tcr_replicas.lock().unwrap();
            if reps.iter().any(|r| r.0 == registry && r.2 == name) {
                return tc_err("ResourceInUse", "A replica already exists in this region.");
            }
            let id = format!("{registry}-{name}");
            reps.push((
                registry.clone(),
                id.clone(),
                name.clone(),
                tcr_region_id(&name),
                Instant::now(),
            ));
            tc_ok(json!({"ReplicationRegistryId": id}))
        }
        "DescribeReplicationInstanceSyncStatus" => {
            let rid = b.get("ReplicationRegistryId").and_then(Value::as_str).unwrap_or("");
            let rep = st
                .tcr_replicas
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.0 == registry && r.1 == rid)
                .cloned();
            let Some(rep) = rep else {
                return tc_err("ResourceNotFound", "The replica does not exist.");
            };
            if b.get("ReplicationRegionId").and_then(Value::as_i64) != Some(rep.3) {
                return tc_err(
                    "InvalidParameterValue",
                    "ReplicationRegionId does not match the replica.",
                );
            }
            // One ReplicationLog object (the latest entry) and no count, as the API answers.
            let last = st.tcr_log.lock().unwrap().last().cloned();
            let failed = last.as_ref().is_some_and(|e| e["Status"] == "Failed");
            let mut v = json!({"ReplicationStatus": if failed { "Failed" } else { "Success" },
                         "ReplicationTime": "2026-11-24 08:00:05"});
            if let Some(e) = last {
                v["ReplicationLog"] = e;
            }
            tc_ok(v)
        }
        "DeleteReplicationInstance" => {
            let rid = b
                .get("ReplicationRegistryId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut reps = st.tcr_replicas.lock().unwrap();
            let before = reps.len();
            reps.retain(|r| !(r.0 == registry && r.1 == rid));
            if reps.len() == before {
                tc_err("ResourceNotFound", "The replica does not exist.")
            } else {
                tc_ok(json!({}))
            }
        }
        other => tc_err("InvalidAction", &format!("{other} is not an action")),
    }
}
