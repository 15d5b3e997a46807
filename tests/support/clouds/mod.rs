//! HTTP stand-ins for the Huawei Cloud IMS, Alibaba Cloud ECS, AWS EC2, Tencent CVM and Google
//! Compute Engine image APIs and the TCR API, one module per cloud on this shared harness (state, routing, signature
//! checks, throttling), following their published request and response shapes: paths and
//! actions, bodies, error codes, and the asynchronous copy lifecycle with progress. Every request's signature is checked (a bad one is
//! answered as the cloud does: 401 / SignatureDoesNotMatch / AuthFailure) after recomputing it
//! from the request as received, and every request is logged for the tests to inspect.
//!
//! In time, a stand-in behaves as its [`Profile`] says: [`Profile::fast`] (the default) answers
//! at once and never throttles; [`Profile::realistic`] behaves as the cloud documents (and as
//! docs/BACKENDS.md records): a new image is listed only some seconds after the call that made
//! it, Huawei member calls are jobs that take a while (and may fail), every API is a token
//! bucket per account answering the cloud's own throttling code, and transient 5xx may be
//! injected. Listings page at the vendors' sizes in every profile (ECS `PageSize` default 10,
//! at most 100; CVM `Limit` default 20, at most 100), in creation order, so the newest image
//! of a large account is on the last page. Every call is counted per API ([`Stand::count`])
//! for the tests' call budgets.
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

mod alibaba;
mod aws;
pub mod azure;
pub mod google;
mod huawei;
pub mod sts;
mod tcr;
mod tencent;

/// How a stand-in behaves in time.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// A new image (a copy) is listed (describe, list, find by token or name) this long after
    /// the call that made it.
    pub list_lag: Duration,
    /// Huawei member calls (BatchAddMembers, BatchUpdateMembers, BatchDeleteMembers) are jobs
    /// this long; their change shows in the member list when the job succeeds.
    pub member_job: Duration,
    /// Huawei member jobs end `FAIL` with this (error_code, fail_reason), changing nothing.
    pub member_job_fails: Option<(String, String)>,
    /// ECS, EC2, CVM: a member a share call added (or a withdraw removed) shows in (leaves)
    /// the member list this long after the call.
    pub member_lag: Duration,
    /// A token bucket per API and account: (capacity, refill per second); a call that finds
    /// it empty is answered with the cloud's throttling error.
    pub bucket: Option<(f64, f64)>,
    /// The first request let through, and every n-th after it, is answered with a transient
    /// server error (5xx or the cloud's internal error code): a copy of a few calls still meets
    /// one.
    pub error_every: Option<u32>,
}

impl Profile {
    /// Answers at once, one page as big as the vendor allows, no throttling.
    pub fn fast() -> Self {
        Self::default()
    }

    /// As the clouds behave: new images listed 5 s late, member jobs of 5 s, 20 calls per API
    /// at once refilled at 5 a second (EC2's documented bucket for non-mutating calls is 100
    /// refilled at 20/s; smaller here so the tests meet it).
    pub fn realistic() -> Self {
        Self {
            list_lag: Duration::from_secs(5),
            member_job: Duration::from_secs(5),
            member_job_fails: None,
            member_lag: Duration::from_secs(5),
            bucket: Some((20.0, 5.0)),
            error_every: None,
        }
    }
}

/// A Huawei member job: what it changes when it succeeds.
#[derive(Clone, Debug)]
pub struct MemberJob {
    pub id: String,
    pub done_at: Instant,
    /// (error_code, fail_reason) when it fails.
    pub fails: Option<(String, String)>,
    /// image -> (member, status to set; `None`: remove the member).
    pub changes: Vec<(String, String, Option<String>)>,
    pub applied: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Huawei,
    Alibaba,
    Aws,
    Tencent,
    /// Tencent Container Registry (API 3.0, service `tcr`).
    Tcr,
    /// Google Compute Engine (`compute/v1`, OAuth2 bearer tokens).
    Google,
    /// Azure Compute Gallery (Azure Resource Manager, Entra ID bearer tokens).
    Azure,
}

pub const AK: &str = "AKTESTSTANDIN";
pub const SK: &str = "sk/test+standin=";
/// AWS only: a second account's keys, and the two accounts' ids.
pub const AK2: &str = "AKTESTOTHERACCT";
pub const SK2: &str = "sk/test+other=";
pub const AWS_ACCOUNT: &str = "123456789012";
pub const AWS_OTHER_ACCOUNT: &str = "210987654321";
/// Huawei: the account (domain) whose keys `AK` are.
pub const HW_ACCOUNT: &str = "0a1b2c3d4e";
/// Tencent: the account whose keys `AK` are.
pub const TC_ACCOUNT: &str = "100000000001";
/// Alibaba: the account whose keys `AK` are.
pub const ALI_ACCOUNT: &str = "1234567890123456";

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
    /// Not listed before this (the cloud's eventual consistency); `None`: listed at once.
    pub listed_at: Option<Instant>,
    /// A copy that ends failed (ECS `CreateFailed`, EC2 `failed`, CVM `CREATEFAILED`) when its
    /// time is up.
    pub fails: bool,
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
    /// Whether the copy ended failed.
    pub fn failed(&self) -> bool {
        self.fails && self.ready()
    }
    /// Whether the cloud lists it yet.
    pub fn listed(&self) -> bool {
        self.listed_at.is_none_or(|t| Instant::now() >= t)
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
    /// Answered with an injected transient server error (`Profile::error_every`).
    pub server_error: bool,
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
    /// Image id -> (account, status): who the image is shared with (status `pending` or
    /// `accepted` on Huawei; `shared` on the clouds without acceptance).
    pub members: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// TCR: instances (id, region, type).
    pub tcr_instances: Mutex<Vec<(String, String, String)>>,
    /// TCR: replicas (primary id, replica id, region, region id, created).
    pub tcr_replicas: Mutex<Vec<TcrReplica>>,
    /// TCR: the replication log; DescribeReplicationInstanceSyncStatus returns the last entry.
    pub tcr_log: Mutex<Vec<Value>>,
    /// TCR: when the last CreateReplicationInstance was accepted (1 request/s allowed).
    pub tcr_last_create: Mutex<Option<Instant>>,
    /// How it behaves in time.
    pub profile: Mutex<Profile>,
    /// This many next copies end failed.
    pub fail_copies: AtomicU32,
    /// Requests that passed the signature and throttling checks (every `error_every`-th of
    /// them is answered with a server error).
    served: AtomicU32,
    /// Huawei member jobs.
    pub member_jobs: Mutex<Vec<MemberJob>>,
    /// (image, account) -> until when the member list shows it as before a change, and
    /// whether it was a member before (`Profile::member_lag`).
    member_changes: Mutex<HashMap<(String, String), (Instant, bool)>>,
    /// The security token service: trusted roles, handed-out keys.
    pub sts: Mutex<sts::Sts>,
    /// Google, Azure: bearer tokens handed out -> until when they are good.
    bearer_tokens: Mutex<HashMap<String, Instant>>,
    /// Google: image -> its IAM policy's version (the etag).
    policy_versions: Mutex<HashMap<String, u64>>,
    /// Azure: the role assignments made, as ARM answers them (`members` lists who holds one).
    role_assignments: Mutex<Vec<Value>>,
    /// Google: operations by name, as `globalOperations.get` answers them (an insert's is
    /// `DONE` once its image is, or at once with the error of a refused insert).
    operations: Mutex<HashMap<String, Value>>,
    /// Token buckets: (API, account) -> (tokens, last refill).
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
    seq: AtomicU32,
}

impl State {
    /// Whether the copy being made now is to fail (one of `fail_copies`).
    pub fn copy_fails(&self) -> bool {
        self.fail_copies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// When a new image is listed, under the profile.
    pub fn listed_at(&self) -> Option<Instant> {
        let lag = self.profile.lock().unwrap().list_lag;
        (!lag.is_zero()).then(|| Instant::now() + lag)
    }

    /// Take a token of `api`'s bucket for `account`; false when it is empty (throttled).
    fn take_token(&self, api: &str, account: &str) -> bool {
        let Some((cap, rate)) = self.profile.lock().unwrap().bucket else {
            return true;
        };
        let mut b = self.buckets.lock().unwrap();
        let e = b
            .entry((api.to_string(), account.to_string()))
            .or_insert((cap, Instant::now()));
        e.0 = (e.0 + e.1.elapsed().as_secs_f64() * rate).min(cap);
        e.1 = Instant::now();
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// A share call changed `account`'s membership of `image` (`was`: it was a member before):
    /// the member list shows the old state for the profile's member lag.
    pub fn member_changed(&self, image: &str, account: &str, was: bool) {
        let lag = self.profile.lock().unwrap().member_lag;
        if lag.is_zero() {
            return;
        }
        self.member_changes
            .lock()
            .unwrap()
            .entry((image.to_string(), account.to_string()))
            .or_insert((Instant::now() + lag, was));
    }

    /// The accounts the member list of `image` shows now (lagging behind recent changes).
    pub fn listed_members(&self, image: &str) -> Vec<String> {
        let now = Instant::now();
        let members: Vec<String> = self
            .members
            .lock()
            .unwrap()
            .get(image)
            .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        let changes = self.member_changes.lock().unwrap();
        let lagging = |a: &str| {
            changes
                .get(&(image.to_string(), a.to_string()))
                .filter(|(until, _)| now < *until)
                .map(|(_, was)| *was)
        };
        let mut out: Vec<String> = members.iter().filter(|a| lagging(a).unwrap_or(true)).cloned().collect();
        for ((img, a), _) in changes.iter() {
            if img == image && !members.contains(a) && lagging(a) == Some(true) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Whether a call signed with handed-out keys (`session`) came after they expired; such a
    /// call is counted ([`Stand::expired_calls`]) and refused as the cloud refuses it.
    fn expired(&self, session: Option<&sts::Session>) -> bool {
        let gone = session.is_some_and(|x| Instant::now() >= x.expires);
        if gone {
            self.sts.lock().unwrap().expired_calls += 1;
        }
        gone
    }

    /// A bearer token handed out, good until `until`.
    pub fn hand_out(&self, token: &str, until: Instant) {
        self.bearer_tokens.lock().unwrap().insert(token.to_string(), until);
    }

    /// The request's bearer token: `Ok` when handed out and good; `Err(true)` when it expired
    /// (counted as an expired call), `Err(false)` when it is none of ours.
    pub fn bearer(&self, hdr: &BTreeMap<String, String>) -> Result<(), bool> {
        let t = hdr
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let until = self.bearer_tokens.lock().unwrap().get(t).copied();
        match until {
            Some(u) if Instant::now() < u => Ok(()),
            Some(_) => {
                self.sts.lock().unwrap().expired_calls += 1;
                Err(true)
            }
            None => Err(false),
        }
    }

    /// Whether image `id` is in `region`.
    pub fn has_image(&self, id: &str, region: &str) -> bool {
        self.images
            .lock()
            .unwrap()
            .iter()
            .any(|i| i.id == id && i.region == region)
    }
}

pub struct Stand {
    pub kind: Kind,
    pub url: String,
    pub state: Arc<State>,
    /// Google: the service account's key file (its token endpoint this stand-in).
    key: String,
}

impl Stand {
    /// A stand-in with the fast profile.
    pub async fn start(kind: Kind) -> Self {
        Self::start_with(kind, Profile::fast()).await
    }

    pub async fn start_with(kind: Kind, profile: Profile) -> Self {
        let state = Arc::new(State::default());
        *state.profile.lock().unwrap() = profile;
        let st = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { handle(kind, &st, method, uri, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let key = google::key_file(&url);
        Self { kind, url, state, key }
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
            // Compute Engine: the resource name is the image's id.
            Kind::Google => google::resource(name),
            Kind::Azure => azure::version_id(name),
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
            listed_at: None,
            fails: false,
        });
        id
    }

    /// Set an image's creation time (Unix seconds).
    pub fn set_created(&self, id: &str, unix: i64) {
        for i in self.state.images.lock().unwrap().iter_mut().filter(|i| i.id == id) {
            i.created_unix = unix;
        }
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

    /// A source region, a destination region, the credentials Secret's data and the provider
    /// kind of this stand-in's cloud, as the tests use them.
    pub fn account(&self) -> (&'static str, &'static str, Vec<(&'static str, &str)>, &'static str) {
        match self.kind {
            Kind::Huawei => (
                "cn-north-4",
                "cn-east-3",
                vec![("accessKey", AK), ("secretKey", SK), ("iamEndpoint", self.url.as_str())],
                "huawei",
            ),
            Kind::Alibaba => (
                "cn-hangzhou",
                "cn-shanghai",
                vec![("accessKeyId", AK), ("accessKeySecret", SK)],
                "alibaba",
            ),
            Kind::Aws => (
                "us-east-1",
                "eu-west-1",
                vec![("accessKeyId", AK), ("secretAccessKey", SK)],
                "aws",
            ),
            Kind::Tencent | Kind::Tcr => (
                "ap-guangzhou",
                "ap-shanghai",
                vec![("secretId", AK), ("secretKey", SK)],
                "tencent",
            ),
            Kind::Google => (
                "us-central1",
                "europe-west1",
                vec![("serviceAccountKey", self.key.as_str())],
                "google",
            ),
            Kind::Azure => (
                "eastus",
                "westeurope",
                vec![
                    ("tenantId", azure::TENANT),
                    ("clientId", azure::CLIENT),
                    ("clientSecret", azure::CLIENT_SECRET),
                    ("subscriptionId", azure::SUBSCRIPTION),
                    ("resourceGroup", azure::RESOURCE_GROUP),
                    ("authorityHost", self.url.as_str()),
                ],
                "azure",
            ),
        }
    }

    /// Who an image is shared with: (account, status), sorted.
    pub fn members_of(&self, image: &str) -> Vec<(String, String)> {
        let mut v = self
            .state
            .members
            .lock()
            .unwrap()
            .get(image)
            .cloned()
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Hold every request this stand-in received and every answer it gave to the cloud's
    /// official SDK (`tests/conformance/sdk_check.py`): operations, parameters, body fields and
    /// answer fields must be the API's own. Panics with the violations.
    pub fn assert_conforms(&self) {
        super::conformance::check_exchanges(&self.exchanges());
    }

    /// Every request and answer, as the SDK check reads them.
    fn exchanges(&self) -> Vec<Value> {
        let kind = match self.kind {
            Kind::Huawei => "huawei",
            Kind::Alibaba => "alibaba",
            Kind::Aws => "aws",
            Kind::Tencent => "cvm",
            Kind::Tcr => "tcr",
            Kind::Google => "google",
            Kind::Azure => "azure",
        };
        self.requests()
            .iter()
            .map(|r| {
                json!({"kind": kind, "method": r.method, "path": r.path, "query": r.query, "headers": r.headers,
                    "body": r.raw_body, "status": r.status, "response": r.response, "bad_signature": r.bad_signature})
            })
            .collect()
    }

    /// Requests whose action (Alibaba, AWS) is `what`, or whose `METHOD path` (Huawei) contains it.
    pub fn calls(&self, what: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.action() == what || format!("{} {}", r.method, r.path).contains(what))
            .collect()
    }

    /// How many calls of `what` (as [`Stand::calls`] matches it) the work took.
    pub fn count(&self, what: &str) -> usize {
        self.calls(what).len()
    }

    /// Calls per API (Action, or Huawei's `METHOD path-shape`): the call budget's table.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            *m.entry(api_of(self.kind, &r.method, &r.path, &r.params)).or_default() += 1;
        }
        m
    }

    /// Panic, with the whole table, when an API was called more than its budget allows
    /// (APIs not named are not limited here).
    pub fn assert_budget(&self, what: &str, budget: &[(&str, usize)]) {
        let counts = self.counts();
        for (api, most) in budget {
            let n = counts.get(*api).copied().unwrap_or(0);
            assert!(
                n <= *most,
                "{what}: {api} called {n} times, budget {most}; all calls: {counts:?}"
            );
        }
    }

    /// Trust web identity tokens of `issuer` for `audience`, for these roles (arn, account).
    pub fn trust_web_identity(&self, issuer: &str, audience: &str, roles: &[(&str, &str)]) {
        let mut s = self.state.sts.lock().unwrap();
        s.issuer = issuer.into();
        s.audience = audience.into();
        for (arn, account) in roles {
            s.roles.push(sts::Role {
                arn: arn.to_string(),
                account: account.to_string(),
                from: None,
                external_id: None,
            });
        }
    }

    /// Let keys of account `from` assume `arn` (in `account`), with `external_id` if given.
    pub fn trust_role(&self, arn: &str, account: &str, from: &str, external_id: Option<&str>) {
        self.state.sts.lock().unwrap().roles.push(sts::Role {
            arn: arn.into(),
            account: account.into(),
            from: Some(from.into()),
            external_id: external_id.map(String::from),
        });
    }

    /// How long the keys handed out from now on live.
    pub fn set_credentials_life(&self, d: Duration) {
        self.state.sts.lock().unwrap().life = d;
    }

    /// Calls made with handed-out keys after they expired.
    pub fn expired_calls(&self) -> u32 {
        self.state.sts.lock().unwrap().expired_calls
    }

    /// Every key set handed out so far.
    pub fn sessions(&self) -> Vec<sts::Session> {
        self.state.sts.lock().unwrap().sessions.clone()
    }

    /// Set the profile from now on.
    pub fn set_profile(&self, p: Profile) {
        *self.state.profile.lock().unwrap() = p;
    }
}

/// A test that fails with a stand-in in scope is told first whether the exchanges broke the
/// SDK's model: a request the real API would refuse is often why the test failed (the stand-in
/// refused it, or answered what the cloud would not), and the test's own message would hide it.
impl Drop for Stand {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let found = super::conformance::violations(&self.exchanges());
        if !found.is_empty() {
            eprintln!(
                "\n=== this test failed; its {:?} stand-in also saw exchanges the SDK's model refuses (look at these first):",
                self.kind
            );
            for v in found.iter().take(20) {
                eprintln!("{v}");
            }
        }
    }
}

/// A creation time as a cloud writes it.
fn created_text(unix: i64, format: &str) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_default()
}

/// A `*`/`?` wildcard match, as EC2's filters take.
fn wildcard(pattern: &str, s: &str) -> bool {
    match (pattern.chars().next(), s.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            wildcard(&pattern[1..], s)
                || (!s.is_empty() && wildcard(pattern, &s[s.chars().next().unwrap().len_utf8()..]))
        }
        (Some('?'), Some(c)) => wildcard(&pattern[1..], &s[c.len_utf8()..]),
        (Some(p), Some(c)) if p == c => wildcard(&pattern[p.len_utf8()..], &s[c.len_utf8()..]),
        _ => false,
    }
}

/// An API's name for the call budget and the token buckets: the Action, or Huawei's method and
/// path with ids as `{}`.
fn api_of(kind: Kind, method: &str, path: &str, params: &BTreeMap<String, String>) -> String {
    match kind {
        Kind::Huawei => {
            let shape: Vec<&str> = path
                .split('/')
                .map(|seg| {
                    if seg.bytes().any(|b| b.is_ascii_digit()) && !seg.starts_with('v') {
                        "{}"
                    } else {
                        seg
                    }
                })
                .collect();
            format!("{method} {}", shape.join("/"))
        }
        Kind::Google => google::method_of(method, path),
        Kind::Azure => azure::method_of(method, path),
        _ => params.get("Action").cloned().unwrap_or_default(),
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
        // The method id as the action; the token endpoint's form as parameters.
        Kind::Google => {
            let mut p: BTreeMap<String, String> = query.iter().cloned().collect();
            if uri.path() == "/token" || uri.path() == "/v1/token" {
                p.extend(parse_pairs(std::str::from_utf8(&body).unwrap_or("")));
            }
            p.insert("Action".into(), google::method_of(method.as_str(), uri.path()));
            (p, serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        Kind::Azure => {
            let mut p: BTreeMap<String, String> = query.iter().cloned().collect();
            if uri.path().ends_with("/oauth2/v2.0/token") {
                p.extend(parse_pairs(std::str::from_utf8(&body).unwrap_or("")));
            }
            p.insert("Action".into(), azure::method_of(method.as_str(), uri.path()));
            (p, serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
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
        server_error: false,
        bad_signature: false,
    };
    // Logged on arrival (a held answer is still seen), completed with the outcome.
    let idx = {
        let mut r = st.requests.lock().unwrap();
        r.push(rec.clone());
        r.len() - 1
    };
    let account = auth_field(hdr.get("authorization").map(String::as_str).unwrap_or(""), "Credential")
        .or_else(|| auth_field(hdr.get("authorization").map(String::as_str).unwrap_or(""), "Access"))
        .or_else(|| query.iter().find(|(k, _)| k == "AccessKeyId").map(|(_, v)| v.as_str()))
        .map(|c| c.split('/').next().unwrap_or(c).to_string())
        .unwrap_or_default();
    let api = api_of(kind, method.as_str(), uri.path(), &params);
    let error_every = st.profile.lock().unwrap().error_every;
    let resp = if let Some(bad) = check_signature(st, kind, &method, &uri, &query, &hdr, &body) {
        rec.bad_signature = true;
        bad
    } else if !matches!(api.as_str(), "token" | "sts.token")
        && (st
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
            || !st.take_token(&api, &account))
    {
        rec.throttled = true;
        throttled(kind)
    } else if error_every.is_some_and(|n| n > 0 && st.served.fetch_add(1, Ordering::SeqCst).is_multiple_of(n)) {
        rec.server_error = true;
        server_error(kind)
    } else {
        match kind {
            Kind::Huawei => huawei::huawei(st, &method, uri.path(), &params, &json_body, &hdr).await,
            Kind::Alibaba => alibaba::alibaba(st, &params).await,
            Kind::Aws => aws::aws(st, &params, &hdr).await,
            Kind::Tencent => tencent::tencent(st, &json_body, &hdr).await,
            Kind::Tcr => tcr::tcr(st, &json_body, &hdr).await,
            Kind::Google if uri.path() == "/token" => {
                let me = format!("http://{}/token", hdr.get("host").map(String::as_str).unwrap_or(""));
                google::token(st, &me, &params)
            }
            Kind::Google if uri.path() == "/v1/token" => google::sts_exchange(st, &params),
            Kind::Google if uri.path().ends_with(":generateAccessToken") => google::generate(st, uri.path(), &hdr),
            Kind::Google => google::google(st, &method, uri.path(), &params, &json_body, &hdr).await,
            Kind::Azure if uri.path().ends_with("/oauth2/v2.0/token") => azure::token(st, uri.path(), &params),
            Kind::Azure => azure::azure(st, &method, uri.path(), &params, &json_body).await,
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
    st: &State,
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
        // The signed assertion, the web identity token: the credential.
        Kind::Google if uri.path() == "/token" || uri.path() == "/v1/token" => None,
        Kind::Google => google::check_token(st, hdr),
        Kind::Azure if uri.path().ends_with("/oauth2/v2.0/token") => None, // the client secret is in the form
        Kind::Azure => azure::check_token(st, hdr),
        Kind::Huawei => {
            let unsigned_ok = uri.path() == "/v3.0/OS-AUTH/id-token/tokens"
                || (uri.path() == "/v3.0/OS-CREDENTIAL/securitytokens"
                    && serde_json::from_slice::<Value>(body)
                        .ok()
                        .and_then(|b| b.pointer("/auth/identity/methods").cloned())
                        == Some(json!(["token"])));
            if unsigned_ok && auth.is_empty() {
                return None; // the token in the body is the credential
            }
            // Handed-out keys: only with their X-Security-Token, signed.
            let ak = auth_field(&auth, "Access").unwrap_or("").to_string();
            let list = auth_field(&auth, "SignedHeaders").unwrap_or("").to_string();
            let session = st.sts.lock().unwrap().session(&ak).cloned();
            let sk = match &session {
                None if ak == AK => SK.to_string(),
                Some(x)
                    if hdr.get("x-security-token") == Some(&x.token)
                        && list.split(';').any(|h| h == "x-security-token") =>
                {
                    x.sk.clone()
                }
                _ => String::new(),
            };
            let ok = auth.starts_with("SDK-HMAC-SHA256 ")
                && !sk.is_empty()
                && list.contains("x-sdk-date")
                && list.contains("host")
                && {
                    let s = sign::huawei(
                        &ak,
                        &sk,
                        method.as_str(),
                        uri.path(),
                        query,
                        &signed_headers(&list),
                        body,
                    );
                    auth_field(&auth, "Signature") == Some(s.signature.as_str())
                };
            if ok && st.expired(session.as_ref()) {
                return Some(
                    (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error_code": "APIGW.0307", "error_msg": "The token expires."})),
                    )
                        .into_response(),
                );
            }
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
            let get = |name: &str| p.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            if get("Action").as_deref() == Some("AssumeRoleWithOIDC") {
                return None; // unsigned: the token is the credential
            }
            let given = get("Signature");
            // Handed-out keys: only with their SecurityToken (part of what is signed).
            let ak = get("AccessKeyId").unwrap_or_default();
            let session = st.sts.lock().unwrap().session(&ak).cloned();
            let sk = match &session {
                None if ak == AK => SK.to_string(),
                Some(x) if get("SecurityToken").as_deref() == Some(x.token.as_str()) => x.sk.clone(),
                _ => String::new(),
            };
            let unsigned: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "Signature").cloned().collect();
            let s = sign::alibaba_rpc(&sk, "GET", &unsigned);
            let ok = !sk.is_empty()
                && get("SignatureMethod").as_deref() == Some("HMAC-SHA1")
                && given.as_deref() == Some(s.signature.as_str());
            if ok && st.expired(session.as_ref()) {
                return Some(
                    (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"Code": "InvalidSecurityToken.Expired", "Message": "Specified SecurityToken is expired.", "RequestId": "r"})),
                    )
                        .into_response(),
                );
            }
            (!ok).then(|| {
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation.", "RequestId": "r"})),
                )
                    .into_response()
            })
        }
        Kind::Aws => {
            let form: BTreeMap<String, String> = parse_pairs(std::str::from_utf8(body).unwrap_or(""))
                .into_iter()
                .collect();
            let action = form.get("Action").map(String::as_str).unwrap_or("");
            if action == "AssumeRoleWithWebIdentity" {
                return None; // unsigned: the token is the credential
            }
            let service = if form.get("Version").map(String::as_str) == Some("2011-06-15") {
                "sts"
            } else {
                "ec2"
            };
            let cred = auth_field(&auth, "Credential").unwrap_or("");
            let parts: Vec<&str> = cred.split('/').collect();
            let list = auth_field(&auth, "SignedHeaders").unwrap_or("");
            // Handed-out keys: only with their session token, signed, before they expire.
            let session = st
                .sts
                .lock()
                .unwrap()
                .session(parts.first().copied().unwrap_or(""))
                .cloned();
            let sk = match (parts.first().copied(), &session) {
                (Some(AK), _) => SK.to_string(),
                (Some(AK2), _) => SK2.to_string(),
                (_, Some(s))
                    if hdr.get("x-amz-security-token") == Some(&s.token)
                        && list.split(';').any(|h| h == "x-amz-security-token") =>
                {
                    s.sk.clone()
                }
                _ => String::new(),
            };
            let ok =
                auth.starts_with("AWS4-HMAC-SHA256 ") && parts.len() == 5 && !sk.is_empty() && parts[3] == service && {
                    let date = hdr.get("x-amz-date").cloned().unwrap_or_default();
                    let s = sign::aws_v4(
                        parts[0],
                        &sk,
                        parts[2],
                        service,
                        method.as_str(),
                        uri.path(),
                        query,
                        &signed_headers(list),
                        body,
                        &date,
                    );
                    date.starts_with(parts[1]) && auth_field(&auth, "Signature") == Some(s.signature.as_str())
                };
            if ok && st.expired(session.as_ref()) {
                return Some(aws::aws_error(
                    StatusCode::BAD_REQUEST,
                    "RequestExpired",
                    "Request has expired.",
                ));
            }
            (!ok).then(|| {
                aws::aws_error(
                    StatusCode::UNAUTHORIZED,
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                )
            })
        }
        Kind::Tencent | Kind::Tcr => {
            let sts_call = hdr.get("x-tc-version").map(String::as_str) == Some("2018-08-13");
            if sts_call && hdr.get("x-tc-action").map(String::as_str) == Some("AssumeRoleWithWebIdentity") {
                // Unsigned (`Authorization: SKIP`): the token is the credential.
                return (auth != "SKIP").then(|| {
                    tc_err(
                        "AuthFailure.InvalidAuthorization",
                        "AssumeRoleWithWebIdentity is sent unsigned",
                    )
                });
            }
            let service = match kind {
                _ if sts_call => "sts",
                Kind::Tcr => "tcr",
                _ => "cvm",
            };
            // Canonical headers: names and values lower-cased (the API 3.0 signing rules).
            let cred = auth_field(&auth, "Credential").unwrap_or("");
            let parts: Vec<&str> = cred.split('/').collect();
            let list = auth_field(&auth, "SignedHeaders").unwrap_or("");
            let lowered: Vec<(String, String)> = signed_headers(list)
                .into_iter()
                .map(|(k, v)| (k, v.to_ascii_lowercase()))
                .collect();
            let ts: i64 = hdr.get("x-tc-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
            // Handed-out keys: only with their `X-TC-Token` (API 3.0 does not sign it).
            let session = st
                .sts
                .lock()
                .unwrap()
                .session(parts.first().copied().unwrap_or(""))
                .cloned();
            let sk = match &session {
                None if parts.first() == Some(&AK) => SK.to_string(),
                Some(x) if hdr.get("x-tc-token") == Some(&x.token) => x.sk.clone(),
                _ => String::new(),
            };
            let s = sign::tencent_tc3(parts.first().copied().unwrap_or(""), &sk, service, &lowered, body, ts);
            if !sk.is_empty()
                && auth_field(&auth, "Signature") == Some(s.signature.as_str())
                && st.expired(session.as_ref())
            {
                return Some(tc_err("AuthFailure.TokenFailure", "The token has expired."));
            }
            let ok = auth.starts_with("TC3-HMAC-SHA256 ")
                && parts.len() == 4
                && !sk.is_empty()
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
        Kind::Aws => aws::aws_error(StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded."),
        Kind::Google => google::g_err(StatusCode::FORBIDDEN, "rateLimitExceeded", "Rate Limit Exceeded"),
        Kind::Azure => {
            let mut r = azure::az_err(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "The request is being throttled.");
            r.headers_mut().insert("retry-after", "3".parse().unwrap());
            r
        }
    }
}

/// A transient server error, as each cloud answers one.
fn server_error(kind: Kind) -> Response {
    match kind {
        Kind::Tencent | Kind::Tcr => tc_err("InternalError", "An internal error has occurred. Retry your request."),
        Kind::Huawei => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error_code": "APIG.0201", "error_msg": "Backend unavailable"})),
        )
            .into_response(),
        Kind::Alibaba => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"Code": "ServiceUnavailable", "Message": "The request has failed due to a temporary failure of the server.", "RequestId": "r"})),
        )
            .into_response(),
        Kind::Aws => aws::aws_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The server is overloaded and can't handle the request.",
        ),
        Kind::Google => google::g_err(StatusCode::SERVICE_UNAVAILABLE, "backendError", "Backend Error"),
        Kind::Azure => azure::az_err(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "An internal server error occurred."),
    }
}

async fn hold(st: &State) {
    let d = st.hold_copy_answer.lock().unwrap().take();
    if let Some(d) = d {
        tokio::time::sleep(d).await;
    }
}

/// A Tencent API 3.0 error answer (CVM and TCR).
fn tc_err(code: &str, msg: &str) -> Response {
    axum::Json(json!({"Response": {"Error": {"Code": code, "Message": msg}, "RequestId": "r-1"}})).into_response()
}

/// A Tencent API 3.0 answer (CVM and TCR).
fn tc_ok(mut v: Value) -> Response {
    v["RequestId"] = json!("r-1");
    axum::Json(json!({"Response": v})).into_response()
}
