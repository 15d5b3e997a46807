//! A small, stateful fake Kubernetes API server for tests. The real kube-runtime controllers
//! talk to it over HTTP on 127.0.0.1.
//!
//! Two tiers of controller tests (README, Development):
//! - **Real server** (`tests/support/envtest.rs`: envtest's etcd + kube-apiserver): what only a
//!   real server can tell — server-side apply and managed fields, CEL with the real cost
//!   estimator, printer columns, status subresource rules, real Leases, RBAC with the chart's
//!   roles, and `apiserver_request_total` at rest. `tests/suites/envtest.rs`, `tests/suites/envtest_at_rest.rs`,
//!   and `make bench`'s controller-scale run.
//! - **This fake**, for what a real server cannot be made to do on demand, or cannot show:
//!   its request log per object (`writes_to`, `watch_events_of`: "which write came after which",
//!   e.g. no Event after the finalizer-removing PATCH in `operator.rs`, no write at rest per
//!   object in `oci_controller.rs` and `replica_controller.rs`), a dump of every stored object
//!   but Secrets (`everything_but_secrets`, the credential-leak checks in `security.rs`,
//!   `vm_clouds.rs`, `vm_openstack.rs`), CRDs that are not Established yet
//!   (`operator.rs::waits_for_crds_before_starting`), watch bookmarks on a short period, and a
//!   server in-process that starts in milliseconds for the many small scenarios (`vm_clouds.rs`,
//!   `replica_tencent.rs`, `oci_copy.rs`, `bench_lag.rs`); and faults on demand
//!   ([`FakeApiServer::inject`]: 409/429/500/503 answers or slow ones; [`FakeApiServer::drop_watches`]),
//!   used by `oci_controller.rs::api_server_faults_delay_but_neither_break_nor_duplicate_a_copy`.
//!
//! It behaves like the real server where the operator depends on it:
//! - server-set metadata: uid, creationTimestamp, one global increasing resourceVersion,
//!   generation bumped only by spec (non-metadata, non-status) changes;
//! - 409 AlreadyExists on duplicate create, 409 Conflict on a stale resourceVersion (PUT, and
//!   patches whose body carries one); 404 NotFound with a Status body;
//! - list with a real resourceVersion, label selectors (=, ==, !=, exists, !exists, in, notin),
//!   field selectors (metadata.name, metadata.namespace), namespace isolation;
//! - watch from a resourceVersion without replaying older events (from "0" or none: synthetic
//!   ADDED for what exists), timeoutSeconds, BOOKMARK events when allowed;
//! - status subresource isolation for resources whose CRD enables it (spec writes through
//!   /status and status writes through the main resource are ignored; status dropped on create);
//! - merge, JSON (a `test` for null on an absent path succeeds, as on the real server) and apply
//!   patches (apply creates a missing object; fields this manager applied before and now omits
//!   are removed; lists are replaced whole); strategic merge is treated as a JSON merge patch;
//! - delete with finalizers sets deletionTimestamp; the object goes when the last finalizer goes;
//!   no new finalizers may be added while deleting;
//! - writes that change nothing give no event and no resourceVersion bump;
//! - CRDs register their resource (scope, status subresource) and are marked Established;
//!   custom resources are checked against the CRD's CEL rules (422 Invalid), like the real server.
//!
//! Not covered: authentication and RBAC, admission, OpenAPI structural checks other than CEL
//! (required fields, types, enums), defaulting, managedFields, list paging (`limit` is ignored),
//! 410 Gone for expired resourceVersions (all history is kept), namespaces need not exist,
//! delete propagation/ownerReferences garbage collection, strategic-merge list semantics.

#![allow(dead_code)]
// Errors here are ready HTTP responses; boxing them buys nothing in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

type ResKey = (String, String, String); // group, version, plural

#[derive(Clone)]
struct ResInfo {
    kind: String,
    namespaced: bool,
    status_subresource: bool,
    schema: Option<Value>,
}

#[derive(Clone)]
struct WatchEvent {
    rv: u64,
    res: ResKey,
    namespace: String,
    type_: &'static str,
    object: Value,
}

type ObjKey = (ResKey, String, String); // resource, namespace ("" if cluster), name

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<WatchEvent>,
    resources: HashMap<ResKey, ResInfo>,
    applied: HashMap<(ObjKey, String, bool), Value>, // (object, manager, status?) -> last applied config
    requests: Vec<(String, String)>,                 // (method, path?query)
    faults: Vec<Fault>,
    /// Bumped by `drop_watches`: every watch opened before it ends.
    watch_epoch: u64,
}

/// A fault injected into the answers of requests that match.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The HTTP method ("PATCH", "GET", ...; "WATCH" for watch requests).
    pub method: String,
    /// A substring of the path and query (`/status`, `imagereplications`).
    pub path_contains: String,
    /// What to do.
    pub kind: FaultKind,
    /// How many matching requests get it.
    pub times: usize,
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status and a Status body (429 with `Retry-After: 1`; 409 as a Conflict).
    Status(u16),
    /// Answer normally after this long.
    Delay(Duration),
}

/// Shared state of a running fake server.
#[derive(Clone)]
pub struct FakeApiServer {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    notify: Arc<Notify>,
    bookmark_every: Duration,
}

fn key(g: &str, v: &str, p: &str) -> ResKey {
    (g.to_string(), v.to_string(), p.to_string())
}

fn builtins() -> HashMap<ResKey, ResInfo> {
    let mut m = HashMap::new();
    let mut add = |g: &str, v: &str, p: &str, kind: &str, namespaced: bool, status: bool| {
        m.insert(
            key(g, v, p),
            ResInfo {
                kind: kind.into(),
                namespaced,
                status_subresource: status,
                schema: None,
            },
        );
    };
    add("", "v1", "namespaces", "Namespace", false, true);
    add("", "v1", "secrets", "Secret", true, false);
    add("", "v1", "configmaps", "ConfigMap", true, false);
    add("", "v1", "events", "Event", true, false);
    add("events.k8s.io", "v1", "events", "Event", true, false);
    add("coordination.k8s.io", "v1", "leases", "Lease", true, false);
    add(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
    );
    m
}

fn status_error(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn ok(code: u16, v: Value) -> Response {
    (StatusCode::from_u16(code).unwrap(), axum::Json(v)).into_response()
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn api_version(res: &ResKey) -> String {
    if res.0.is_empty() {
        res.1.clone()
    } else {
        format!("{}/{}", res.0, res.1)
    }
}

/// Everything of an object except metadata and status: what bumps generation.
fn spec_part(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn meta_str<'a>(o: &'a Value, field: &str) -> Option<&'a str> {
    o.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

// ---------- selectors ----------

fn label_matches(labels: &Map<String, Value>, selector: &str) -> bool {
    // Split on commas that are not inside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).all(|t| {
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        let set = |s: &str| -> Vec<String> {
            s.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|x| x.trim().to_string())
                .collect()
        };
        if let Some((k, v)) = t.split_once(" notin ") {
            return get(k).is_none_or(|x| !set(v).contains(&x.to_string()));
        }
        if let Some((k, v)) = t.split_once(" in ") {
            return get(k).is_some_and(|x| set(v).contains(&x.to_string()));
        }
        if let Some((k, v)) = t.split_once("!=") {
            return get(k) != Some(v.trim());
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return get(k) == Some(v.trim());
        }
        if let Some(k) = t.strip_prefix('!') {
            return get(k).is_none();
        }
        get(t).is_some()
    })
}

fn field_matches(o: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|t| {
        let (path, want, neg) = match t.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => match t.split_once("==").or_else(|| t.split_once('=')) {
                Some((p, v)) => (p, v, false),
                None => return false,
            },
        };
        let got = match path.trim() {
            "metadata.name" => meta_str(o, "name"),
            "metadata.namespace" => meta_str(o, "namespace"),
            _ => None,
        }
        .unwrap_or("");
        (got == want.trim()) != neg
    })
}

fn selected(o: &Value, q: &HashMap<String, String>) -> bool {
    let empty = Map::new();
    let labels = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    q.get("labelSelector").is_none_or(|s| label_matches(labels, s))
        && q.get("fieldSelector").is_none_or(|s| field_matches(o, s))
}

// ---------- patches ----------

fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// JSON patch, with the API server's quirk: `test` of null on an absent path succeeds.
fn json_patch_apply(target: &mut Value, patch: &Value) -> Result<(), String> {
    let mut ops: Vec<Value> = patch.as_array().ok_or("a JSON patch is an array")?.clone();
    ops.retain(|op| {
        !(op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value") == Some(&Value::Null)
            && op
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| target.pointer(p).is_none()))
    });
    let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).map_err(|e| e.to_string())?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Remove from `target` the fields present in `old_applied` but absent from `new_applied`.
fn prune_unapplied(target: &mut Value, old_applied: &Value, new_applied: &Value) {
    let (Some(t), Some(old)) = (target.as_object_mut(), old_applied.as_object()) else {
        return;
    };
    for (k, old_v) in old {
        match new_applied.get(k) {
            None => {
                t.remove(k);
            }
            Some(new_v) if old_v.is_object() && new_v.is_object() => {
                if let Some(tv) = t.get_mut(k) {
                    prune_unapplied(tv, old_v, new_v);
                }
            }
            _ => {}
        }
    }
}

/// Deep-merge an applied configuration: objects merge, everything else (lists too) replaces.
fn apply_merge(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(t), Some(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && v.is_object() => apply_merge(tv, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = applied.clone(),
    }
}

// ---------- server ----------

struct Target {
    res: ResKey,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (g, v, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] => (Some(ns.to_string()), [&[*plural][..], more].concat()),
        other => (None, other.to_vec()),
    };
    let plural = rest.first()?;
    Some(Target {
        res: key(g, v, plural),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Decode `%XX` escapes and `+` (query strings and form bodies).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16);
                match h {
                    Ok(c) => {
                        out.push(c);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApiServer {
    /// Start on a free loopback port. Bookmarks are sent every `bookmark_every` on watches that allow them.
    pub async fn start() -> Self {
        Self::start_with(Duration::from_secs(2)).await
    }

    pub async fn start_with(bookmark_every: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            addr,
            store: Arc::new(Mutex::new(Store {
                resources: builtins(),
                ..Default::default()
            })),
            notify: Arc::new(Notify::new()),
            bookmark_every,
        };
        let s = server.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move { s.handle(method, uri, headers, body).await }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that points at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Write the kubeconfig into `dir` and return its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        // Whole or not at all (a rename): an operator process may be reading it meanwhile.
        let tmp = dir.join(format!("kubeconfig.{}", std::process::id()));
        std::fs::write(&tmp, self.kubeconfig()).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    /// A real kube client built from the kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// Inject a fault into the next `times` requests with `method` ("WATCH" for watches) whose
    /// path and query contain `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, kind: FaultKind, times: usize) {
        self.store.lock().unwrap().faults.push(Fault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            kind,
            times,
        });
    }

    /// How many injected faults are still to be served.
    pub fn faults_left(&self) -> usize {
        self.store.lock().unwrap().faults.iter().map(|f| f.times).sum()
    }

    /// End every open watch stream (the clients must watch again).
    pub fn drop_watches(&self) {
        self.store.lock().unwrap().watch_epoch += 1;
        self.notify.notify_waiters();
    }

    /// Requests seen so far, as (method, path?query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.store.lock().unwrap().requests.clone()
    }

    /// Write requests (POST, PUT, PATCH, DELETE) whose path names the object `name` (the object
    /// or its status subresource), as (method, path?query).
    pub fn writes_to(&self, name: &str) -> Vec<(String, String)> {
        let object = format!("/{name}");
        let status = format!("/{name}/status");
        self.requests()
            .into_iter()
            .filter(|(m, _)| matches!(m.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .filter(|(_, p)| {
                let path = p.split('?').next().unwrap_or("");
                path.ends_with(&object) || path.ends_with(&status)
            })
            .collect()
    }

    /// Watch events (what every watcher is woken with) about objects named `name`, of any
    /// kind except Events, as (type, resourceVersion).
    pub fn watch_events_of(&self, name: &str) -> Vec<(String, u64)> {
        self.store
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|e| e.object["metadata"]["name"] == name && e.object["kind"] != "Event")
            .map(|e| (e.type_.to_string(), e.rv))
            .collect()
    }

    /// Every version of every object ever stored (each watch event's object: every status ever
    /// written, every Event) except Secrets, as JSON text — what anyone with read rights on
    /// anything but Secrets could have seen.
    pub fn everything_but_secrets(&self) -> String {
        let st = self.store.lock().unwrap();
        st.history
            .iter()
            .map(|e| &e.object)
            .chain(st.objects.values())
            .filter(|o| o["kind"] != "Secret")
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.lock().unwrap().rv
    }

    async fn handle(self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let pq = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
        let fault = {
            let mut st = self.store.lock().unwrap();
            st.requests.push((method.to_string(), pq.clone()));
            let watch = pq.contains("watch=true") || pq.contains("watch=1");
            let m = if watch { "WATCH".to_string() } else { method.to_string() };
            let hit = st
                .faults
                .iter_mut()
                .find(|f| f.times > 0 && f.method == m && pq.contains(&f.path_contains));
            hit.map(|f| {
                f.times -= 1;
                f.kind.clone()
            })
        };
        match fault {
            Some(FaultKind::Status(code)) => return injected(code),
            Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        if uri.path() == "/version" {
            return ok(200, json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}));
        }
        let Some(t) = parse_path(uri.path()) else {
            return status_error(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({})", uri.path()),
            );
        };
        let info = match self.store.lock().unwrap().resources.get(&t.res).cloned() {
            Some(i) => i,
            None => {
                return status_error(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({})", t.res.2),
                );
            }
        };
        if info.namespaced && t.namespace.is_none() && t.name.is_some() {
            return status_error(404, "NotFound", "namespaced resource requested without a namespace");
        }
        let q = query_map(&uri);
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        match (&method, t.name.is_some()) {
            (&Method::GET, false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => self.watch(t, info, q),
            (&Method::GET, false) => self.list(t, info, q),
            (&Method::GET, true) => self.get(t, info),
            (&Method::POST, false) => match serde_json::from_slice::<Value>(&body) {
                Ok(obj) => self.create(t, info, obj),
                Err(e) => status_error(400, "BadRequest", format!("invalid JSON body: {e}")),
            },
            (&Method::PUT, true) => match serde_json::from_slice::<Value>(&body) {
                Ok(obj) => self.update(t, info, |_| Ok(obj.clone()), None),
                Err(e) => status_error(400, "BadRequest", format!("invalid JSON body: {e}")),
            },
            (&Method::PATCH, true) => self.patch(t, info, &ct, &body, &q),
            (&Method::DELETE, true) => self.delete(t, info),
            _ => status_error(405, "MethodNotAllowed", format!("{method} is not supported here")),
        }
    }

    fn obj_key(t: &Target, info: &ResInfo) -> ObjKey {
        let ns = if info.namespaced {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        (t.res.clone(), ns, t.name.clone().unwrap_or_default())
    }

    fn get(&self, t: Target, info: ResInfo) -> Response {
        let st = self.store.lock().unwrap();
        match st.objects.get(&Self::obj_key(&t, &info)) {
            Some(o) => ok(200, o.clone()),
            None => not_found(&t, &info),
        }
    }

    fn list(&self, t: Target, info: ResInfo, q: HashMap<String, String>) -> Response {
        let st = self.store.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, ns, _), o)| *r == t.res && t.namespace.as_ref().is_none_or(|n| n == ns) && selected(o, &q))
            .map(|(_, o)| o.clone())
            .collect();
        ok(
            200,
            json!({
                "apiVersion": api_version(&t.res), "kind": format!("{}List", info.kind),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items,
            }),
        )
    }

    fn watch(&self, t: Target, info: ResInfo, q: HashMap<String, String>) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let this = self.clone();
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1800);
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let from: Option<u64> = q
            .get("resourceVersion")
            .and_then(|s| s.parse().ok())
            .filter(|rv| *rv != 0);
        let epoch = self.store.lock().unwrap().watch_epoch;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let matches = |e: &WatchEvent| {
                e.res == t.res && t.namespace.as_ref().is_none_or(|n| *n == e.namespace) && selected(&e.object, &q)
            };
            let line = |type_: &str, o: &Value| {
                let mut s = serde_json::to_vec(&json!({"type": type_, "object": o})).unwrap();
                s.push(b'\n');
                Ok(Bytes::from(s))
            };
            let mut pos = match from {
                Some(rv) => rv,
                None => {
                    let (rv, initial): (u64, Vec<Value>) = {
                        let st = this.store.lock().unwrap();
                        let objs = st
                            .objects
                            .iter()
                            .filter(|((r, ns, _), o)| {
                                *r == t.res && t.namespace.as_ref().is_none_or(|n| n == ns) && selected(o, &q)
                            })
                            .map(|(_, o)| o.clone())
                            .collect();
                        (st.rv, objs)
                    };
                    for o in initial {
                        if tx.send(line("ADDED", &o)).await.is_err() {
                            return;
                        }
                    }
                    rv
                }
            };
            let mut next_bookmark = tokio::time::Instant::now() + this.bookmark_every;
            loop {
                let notified = this.notify.notified();
                let (events, rv): (Vec<WatchEvent>, u64) = {
                    let st = this.store.lock().unwrap();
                    if st.watch_epoch != epoch {
                        return; // dropped: the stream ends, as when an API server restarts
                    }
                    (
                        st.history
                            .iter()
                            .filter(|e| e.rv > pos && matches(e))
                            .cloned()
                            .collect(),
                        st.rv,
                    )
                };
                for e in events {
                    pos = e.rv;
                    if tx.send(line(e.type_, &e.object)).await.is_err() {
                        return;
                    }
                }
                // History and rv were read under one lock: nothing at or below rv is missed.
                pos = pos.max(rv);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tokio::time::sleep_until(next_bookmark) => {
                        next_bookmark = tokio::time::Instant::now() + this.bookmark_every;
                        if bookmarks {
                            let rv = this.store.lock().unwrap().rv;
                            let bm = json!({"apiVersion": api_version(&t.res), "kind": info.kind, "metadata": {"resourceVersion": rv.to_string()}});
                            if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(tokio_stream_from(rx)))
            .unwrap()
    }

    /// Record a change: bump rv, store, append to history, wake watchers.
    fn commit(&self, st: &mut Store, k: &ObjKey, type_: &'static str, mut obj: Value) -> Value {
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        if type_ == "DELETED" {
            st.objects.remove(k);
            st.applied.retain(|(ok, _, _), _| ok != k);
        } else {
            st.objects.insert(k.clone(), obj.clone());
        }
        let rv = st.rv;
        st.history.push(WatchEvent {
            rv,
            res: k.0.clone(),
            namespace: k.1.clone(),
            type_,
            object: obj.clone(),
        });
        self.notify.notify_waiters();
        obj
    }

    fn check_cel(info: &ResInfo, obj: &Value, old: Option<&Value>) -> Result<(), Response> {
        let Some(schema) = &info.schema else { return Ok(()) };
        match kube::core::cel::Validator::new().validate(schema, obj, old) {
            Ok(()) => Ok(()),
            Err(errs) => {
                let msg = errs
                    .iter()
                    .map(|e| format!("{}: Invalid value: {}", e.field_path, e.message))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(status_error(
                    422,
                    "Invalid",
                    format!(
                        "{} {:?} is invalid: {msg}",
                        info.kind,
                        meta_str(obj, "name").unwrap_or("")
                    ),
                ))
            }
        }
    }

    fn register_crd(st: &mut Store, crd: &Value) {
        let g = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
        for v in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            st.resources.insert(
                key(g, name, plural),
                ResInfo {
                    kind: kind.into(),
                    namespaced,
                    status_subresource: v.pointer("/subresources/status").is_some(),
                    schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                },
            );
        }
    }

    fn create(&self, t: Target, info: ResInfo, mut obj: Value) -> Response {
        let mut st = self.store.lock().unwrap();
        if !obj.is_object() {
            return status_error(400, "BadRequest", "the body must be an object");
        }
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        if let (Some(body_ns), Some(path_ns)) = (meta_str(&obj, "namespace"), t.namespace.as_deref())
            && body_ns != path_ns
        {
            return status_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) => {
                st.uid += 1;
                format!("{g}{:05x}", st.uid)
            }
            _ => {
                return status_error(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                );
            }
        };
        let k: ObjKey = (
            t.res.clone(),
            if info.namespaced {
                t.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name.clone(),
        );
        if st.objects.contains_key(&k) {
            return status_error(409, "AlreadyExists", format!("{} {name:?} already exists", t.res.2));
        }
        st.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", st.uid);
        let m = obj["metadata"].as_object_mut().unwrap();
        m.insert("name".into(), json!(name));
        if info.namespaced {
            m.insert("namespace".into(), json!(k.1));
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        obj["apiVersion"] = json!(api_version(&t.res));
        obj["kind"] = json!(info.kind);
        if info.status_subresource {
            obj.as_object_mut().unwrap().remove("status");
        }
        if let Err(r) = Self::check_cel(&info, &obj, None) {
            return r;
        }
        if t.res.2 == "customresourcedefinitions" {
            Self::register_crd(&mut st, &obj);
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let now = now_rfc3339();
            obj["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "storedVersions": [obj.pointer("/spec/versions/0/name").cloned().unwrap_or(json!("v1"))],
            });
        }
        let out = self.commit(&mut st, &k, "ADDED", obj);
        ok(201, out)
    }

    /// The shared update path of PUT and PATCH. `change` computes the new object from the current
    /// one; `precondition_rv` is a resourceVersion the body carried.
    fn update(
        &self,
        t: Target,
        info: ResInfo,
        change: impl FnOnce(&Value) -> Result<Value, Response>,
        apply_create: Option<Value>,
    ) -> Response {
        let k = Self::obj_key(&t, &info);
        let status_write = t.sub.as_deref() == Some("status");
        if t.sub.is_some() && !status_write {
            return status_error(404, "NotFound", format!("subresource {:?} not supported", t.sub));
        }
        let mut st = self.store.lock().unwrap();
        let Some(cur) = st.objects.get(&k).cloned() else {
            drop(st);
            return match apply_create {
                Some(obj) if !status_write => self.create(Target { name: None, ..t }, info, obj),
                _ => not_found(&t, &info),
            };
        };
        let mut new = match change(&cur) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && rv != meta_str(&cur, "resourceVersion").unwrap_or("")
        {
            return status_error(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                    t.res.2, k.2
                ),
            );
        }
        if !new.is_object() {
            return status_error(400, "BadRequest", "the body must be an object");
        }
        // Build the stored object: server-owned metadata from the current object.
        let mut out = cur.clone();
        if status_write {
            match new.get("status") {
                Some(s) => out["status"] = s.clone(),
                None => {
                    out.as_object_mut().unwrap().remove("status");
                }
            }
        } else {
            let keep_status = cur.get("status").cloned();
            let meta_new = new.get("metadata").cloned().unwrap_or(json!({}));
            let mut obj = new.as_object().cloned().unwrap_or_default();
            obj.remove("metadata");
            obj.remove("status");
            let mut rebuilt = Value::Object(obj);
            rebuilt["metadata"] = cur["metadata"].clone();
            for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                match meta_new.get(f) {
                    Some(v) if !v.is_null() => rebuilt["metadata"][f] = v.clone(),
                    _ => {
                        rebuilt["metadata"].as_object_mut().unwrap().remove(f);
                    }
                }
            }
            if info.status_subresource {
                if let Some(s) = keep_status {
                    rebuilt["status"] = s;
                }
            } else if let Some(s) = new.get("status") {
                rebuilt["status"] = s.clone();
            }
            out = rebuilt;
        }
        out["apiVersion"] = json!(api_version(&t.res));
        out["kind"] = json!(info.kind);
        new = out;
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            let before = finalizers(&cur);
            if let Some(f) = finalizers(&new).iter().find(|f| !before.contains(f)) {
                return status_error(
                    422,
                    "Forbidden",
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{f}]"
                    ),
                );
            }
        }
        if let Err(r) = Self::check_cel(&info, &new, Some(&cur)) {
            return r;
        }
        if new == cur {
            return ok(200, cur); // no-op: no event, no resourceVersion bump
        }
        if spec_part(&new) != spec_part(&cur) {
            let g = cur.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            let out = self.commit(&mut st, &k, "DELETED", new);
            return ok(200, out);
        }
        let out = self.commit(&mut st, &k, "MODIFIED", new);
        ok(200, out)
    }

    fn patch(&self, t: Target, info: ResInfo, ct: &str, body: &[u8], q: &HashMap<String, String>) -> Response {
        let status_write = t.sub.as_deref() == Some("status");
        match ct {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let p: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return status_error(400, "BadRequest", format!("invalid merge patch: {e}")),
                };
                self.update(
                    t,
                    info,
                    |cur| {
                        let mut v = cur.clone();
                        merge_patch(&mut v, &p);
                        // Keep the precondition only if the patch carried one.
                        if p.pointer("/metadata/resourceVersion").is_none() {
                            v["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
                        }
                        Ok(v)
                    },
                    None,
                )
            }
            "application/json-patch+json" => {
                let p: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return status_error(400, "BadRequest", format!("invalid JSON patch: {e}")),
                };
                self.update(
                    t,
                    info,
                    |cur| {
                        let mut v = cur.clone();
                        json_patch_apply(&mut v, &p).map_err(|e| {
                            status_error(422, "Invalid", format!("the JSON patch could not be applied: {e}"))
                        })?;
                        Ok(v)
                    },
                    None,
                )
            }
            "application/apply-patch+yaml" => {
                let Some(manager) = q.get("fieldManager").cloned() else {
                    return status_error(
                        400,
                        "BadRequest",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    );
                };
                let applied: Value = match serde_yaml::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return status_error(400, "BadRequest", format!("invalid apply patch: {e}")),
                };
                let k = Self::obj_key(&t, &info);
                let prev = self
                    .store
                    .lock()
                    .unwrap()
                    .applied
                    .get(&(k.clone(), manager.clone(), status_write))
                    .cloned();
                let a2 = applied.clone();
                let resp = self.update(
                    t,
                    info,
                    |cur| {
                        let mut v = cur.clone();
                        if let Some(prev) = &prev {
                            prune_unapplied(&mut v, prev, &a2);
                        }
                        apply_merge(&mut v, &a2);
                        if a2.pointer("/metadata/resourceVersion").is_none() {
                            v["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
                        }
                        Ok(v)
                    },
                    Some(applied.clone()),
                );
                if resp.status().is_success() {
                    self.store
                        .lock()
                        .unwrap()
                        .applied
                        .insert((k, manager, status_write), applied);
                }
                resp
            }
            other => status_error(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {other}"),
            ),
        }
    }

    fn delete(&self, t: Target, info: ResInfo) -> Response {
        let k = Self::obj_key(&t, &info);
        let mut st = self.store.lock().unwrap();
        let Some(cur) = st.objects.get(&k).cloned() else {
            drop(st);
            return not_found(&t, &info);
        };
        if finalizers(&cur).is_empty() {
            let out = self.commit(&mut st, &k, "DELETED", cur);
            return ok(200, out);
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return ok(202, cur);
        }
        let mut new = cur;
        new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let out = self.commit(&mut st, &k, "MODIFIED", new);
        ok(202, out)
    }
}

fn not_found(t: &Target, info: &ResInfo) -> Response {
    let name = t.name.clone().unwrap_or_default();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{} {name:?} not found", t.res.2), "reason": "NotFound",
        "details": {"name": name, "group": t.res.0, "kind": t.res.2}, "code": 404,
    });
    let _ = info;
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The answer of an injected fault.
fn injected(code: u16) -> Response {
    let (reason, message) = match code {
        409 => (
            "Conflict",
            "injected: the object has been modified; please apply your changes to the latest version and try again",
        ),
        429 => ("TooManyRequests", "injected: too many requests, please try again later"),
        500 => (
            "InternalError",
            "injected: an error on the server has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "injected: the server is currently unable to handle the request",
        ),
        _ => ("InternalError", "injected"),
    };
    let mut r = status_error(code, reason, message.to_string());
    if code == 429 {
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
    }
    r
}
