//! The Huawei Cloud IMS provider: AK/SK request signing (`SDK-HMAC-SHA256`, optional security
//! token), a project id per region (from the Secret, or resolved by project name through IAM),
//! the image list API to describe images, the cross-region copy API and the asynchronous job API.
//!
//! IMS has no cancel: a copy in flight on delete is awaited and then handled by the deletion
//! policy. Idempotency: when a job finishes, the destination image gets an `imgrep_client_token`
//! tag; before any (re)start the destination region is searched for that tag, then for an image
//! of the destination name that carries no token tag yet (a copy whose request was sent but
//! whose answer was lost), so a crash never yields a second copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::super::facts::Sharing;
use super::super::members::glance_members;
use super::super::{
    Account, CopyHandle, CopyRequest, ImageAt, ImageInfo, ImageSelector, ImageState, Member, ProviderError, Service,
    TOKEN_PROPERTY, TaskPhase, TaskState,
};
use crate::api::v1alpha1::ImageReplicationSpec;
use crate::api::v1alpha1::ProviderKind;
use crate::api::violation::Violation;
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};
use crate::image_replication::vm::facts::{Check, Cloud, GIB, gib, no_encryption};
use crate::oci::client::urlencode;

/// How long a member call waits for its IMS job (`BatchAddMembers`, `BatchUpdateMembers`,
/// `BatchDeleteMembers`) before it gives up for this attempt.
const MEMBER_JOB_WAIT: Duration = Duration::from_secs(120);

/// IMS sharing ("Restrictions on Image Sharing", IMS API reference): within a region, with
/// project ids, at most 256 tenants per system or data disk image (10 per full-ECS image); the
/// member accepts (`BatchUpdateMembers status=accepted`) before it can use the image.
pub const SHARING: Sharing = Sharing {
    account_rule: "a Huawei Cloud project id (32 lowercase hex characters)",
    valid_account: |a| a.len() == 32 && a.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
    member_limit: 256,
    limit_source: "IMS API reference, Restrictions on Image Sharing",
    needs_accept: true,
    // The member call is a job, waited for until it ends.
    members_lag: 0,
    refuses_encrypted_in_place: true,
};

const IMS: &str = "https://ims.{region}.myhuaweicloud.com";
mod sts;

const IAM: &str = "https://iam.myhuaweicloud.com";

/// The Huawei Cloud IMS provider.
#[derive(Clone)]
pub struct Huawei {
    http: reqwest::Client,
    backoff: Backoff,
    /// (access key, project name) -> project id.
    projects: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl Default for Huawei {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

struct Creds {
    ak: String,
    sk: String,
    token: Option<String>,
}

fn creds(acct: &Account) -> Result<Creds, ProviderError> {
    match (acct.text("accessKey"), acct.text("secretKey")) {
        (Some(ak), Some(sk)) => Ok(Creds {
            ak,
            sk,
            token: acct.text("securityToken"),
        }),
        _ => Err(ProviderError::permanent(
            "the credentials Secret needs accessKey and secretKey (and securityToken for temporary credentials)",
        )),
    }
}

/// Classify an IMS / API Gateway error response.
pub(crate) fn error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> Attempt {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("error_code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("error_msg"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| cloud::short(body));
    let text = if code.is_empty() {
        format!("{op}: HTTP {status}: {msg}")
    } else {
        format!("{op}: HTTP {status} {code}: {msg}")
    };
    cloud::attempt(
        classify(status, &code),
        &code,
        text,
        "check the AK/SK and that the user has IMS FullAccess in both regions",
        retry_after,
    )
}

/// The IMS and API Gateway error codes this provider treats specially (IMS API reference,
/// "Error Codes"; API Gateway's throttling and authentication codes). Any other code is
/// classified by its HTTP status.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    // API Gateway: the request was throttled.
    ("APIG.0308", ErrorClass::Throttled),
    ("APIGW.0308", ErrorClass::Throttled),
    // IMS flow control ("the system is busy" / "too many requests"): back off and retry.
    ("IMG.0149", ErrorClass::Throttled),
    ("IMG.0060", ErrorClass::Throttled),
    // Concurrent replication quota: retry later, when a running copy ends.
    ("IMG.0190", ErrorClass::RetryLater),
    // API Gateway authentication (signature, expired or unknown AK).
    ("APIGW.0301", ErrorClass::Auth),
    ("APIG.0301", ErrorClass::Auth),
    ("APIGW.0101", ErrorClass::Permanent),
    // The image or job does not exist.
    ("IMG.0027", ErrorClass::NotFound),
    ("IMG.0005", ErrorClass::NotFound),
];

/// One classification for an IMS error: the code table, then the HTTP status. The message is
/// prose for people; nothing is decided by reading it (an unknown code is classed by status).
pub fn classify(status: u16, code: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, code).unwrap_or_else(|| cloud::by_status(status))
}

/// IMS image `status`: queued, saving, deleted, killed, active (the API has no frozen state).
fn image_state(status: &str) -> ImageState {
    match status {
        "active" => ImageState::Available,
        "queued" | "saving" => ImageState::Creating,
        other => ImageState::Unusable(other.to_string()),
    }
}

/// Parse an IMS image (`GET /v2/cloudimages`), from the fields of the SDK's `ImageInfo` only.
/// Field mapping: `__imagetype` gold/private/shared/market (gold reported as public); encrypted
/// when it has a `__system__cmkid`; a private image made from a KooGallery (marketplace) image
/// carries its `__productcode`. Whether it is a full-ECS image is not a field of the answer:
/// [`full_ecs`] marks it from the list API's `__whole_image` filter.
pub fn parse_image(v: &Value) -> ImageInfo {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let visibility = match s("__imagetype").as_deref() {
        Some("gold") => "public".to_string(),
        Some(t) => t.to_string(),
        None => s("visibility").unwrap_or_default(),
    };
    let size = s("__image_size")
        .and_then(|t| t.parse::<u64>().ok())
        .or_else(|| v.get("__image_size").and_then(Value::as_u64))
        .or_else(|| v.get("size").and_then(Value::as_u64));
    let mut properties = std::collections::BTreeMap::new();
    if s("__productcode").is_some_and(|c| !c.is_empty()) && visibility == "private" {
        properties.insert("__productcode".to_string(), s("__productcode").unwrap_or_default());
    }
    for k in ["__os_version", "__os_type", "__platform", "min_disk"] {
        if let Some(x) = v.get(k) {
            properties.insert(
                k.to_string(),
                x.as_str().map(String::from).unwrap_or_else(|| x.to_string()),
            );
        }
    }
    ImageInfo {
        id: s("id").unwrap_or_default(),
        name: s("name").unwrap_or_default(),
        size_bytes: size,
        disk_format: s("disk_format"),
        container_format: s("container_format"),
        visibility,
        encrypted: Some(s("__system__cmkid").is_some_and(|k| !k.is_empty())),
        state: s("status").map(|st| image_state(&st)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: false,
        digest: None,
        checksum: s("checksum").filter(|c| !c.is_empty()),
        properties,
        created_at: s("created_at"),
        carried: Default::default(),
    }
}

/// Mark a full-ECS image (the list API found it with `__whole_image=true`, a filter of the IMS
/// reference's "Querying Images" that the SDK's request model lacks): one made from a CBR backup
/// has a `__backup_id`, and one that is itself a cross-region replica has a `__data_origin`
/// starting with `image,`.
pub fn full_ecs(info: &mut ImageInfo, v: &Value) {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    info.whole_machine = true;
    info.replicated_from_backup = !s("__backup_id").is_empty() && s("__data_origin").starts_with("image,");
}

/// The IAM endpoint: the Secret's `iamEndpoint`, else the global IAM. IAM is a service of its
/// own: `provider.endpoint` (the IMS endpoint) never stands for it.
fn iam_endpoint(acct: &Account) -> String {
    acct.text("iamEndpoint")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| IAM.to_string())
}

/// One IMS or IAM request.
struct Call<'a> {
    op: &'a str,
    method: Method,
    base: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    project: Option<&'a str>,
    body: Option<Value>,
}

/// The list API's tag filter: `tag=<key>=<value>`.
fn token_tag(token: &str) -> String {
    format!("{TOKEN_PROPERTY}={token}")
}

/// Our token among an image's `tags`. The SDK types them as plain strings; the list API's
/// filter writes a tag `key=value`, and image listings have shown `key.value`: both are read.
fn has_our_tag(v: &Value) -> Option<String> {
    v.get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|t| {
            t.strip_prefix(TOKEN_PROPERTY)
                .and_then(|rest| rest.strip_prefix('=').or_else(|| rest.strip_prefix('.')))
                .map(String::from)
        })
}

impl Huawei {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            backoff,
            projects: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// One signed call. `base` is the service endpoint; `project` goes in `X-Project-Id`.
    async fn call(&self, acct: &Account, call: Call<'_>) -> Result<Value, ProviderError> {
        let Call {
            op,
            method,
            base,
            path,
            query,
            project,
            body,
        } = call;
        let c = creds(acct)?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let read = method == Method::GET;
        self.backoff
            .run(op, read, || {
                let (method, body, c) = (method.clone(), body.clone(), &c);
                async move {
                    let mut url = reqwest::Url::parse(&format!("{base}{path}"))
                        .map_err(|e| ProviderError::permanent(format!("{op}: bad endpoint {base}: {e}")))?;
                    if !query.is_empty() {
                        url.set_query(Some(
                            &query
                                .iter()
                                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                                .collect::<Vec<_>>()
                                .join("&"),
                        ));
                    }
                    let mut headers = vec![
                        ("Content-Type".to_string(), "application/json".to_string()),
                        ("Host".to_string(), cloud::host_of(&url)),
                        (
                            "X-Sdk-Date".to_string(),
                            crate::cloud::sign::compact_time(k8s_openapi::jiff::Timestamp::now()),
                        ),
                    ];
                    if let Some(p) = project {
                        headers.push(("X-Project-Id".into(), p.to_string()));
                    }
                    if let Some(t) = &c.token {
                        headers.push(("X-Security-Token".into(), t.clone()));
                    }
                    let signed = crate::cloud::sign::huawei(
                        &c.ak,
                        &c.sk,
                        method.as_str(),
                        url.path(),
                        query,
                        &headers,
                        body.as_bytes(),
                    );
                    let mut rb = self.http.request(method, url);
                    for (k, v) in &headers {
                        if k != "Host" {
                            rb = rb.header(k.as_str(), v.as_str());
                        }
                    }
                    rb = rb.header("Authorization", signed.authorization);
                    if !body.is_empty() {
                        rb = rb.body(body);
                    }
                    let a = cloud::exchange(op, rb).await?;
                    let text = &a.text;
                    if a.ok() {
                        Ok(if text.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(text)
                                .map_err(|e| ProviderError::transient(format!("{op}: unreadable answer: {e}")))?
                        })
                    } else {
                        Err(error(op, a.status, text, a.retry_after))
                    }
                }
            })
            .await
    }

    fn ims(acct: &Account, region: &str) -> String {
        cloud::endpoint(acct.endpoint.as_deref(), IMS, region)
    }

    /// The project id for a project name (a region's default project is named after the region):
    /// `projectId.<name>` from the Secret, else IAM `GET /v3/projects?name=`.
    async fn project_id(&self, acct: &Account, name: &str) -> Result<String, ProviderError> {
        if let Some(id) = acct.text(&format!("projectId.{name}")) {
            return Ok(id);
        }
        // Known per account: renewed short-lived keys are the same account.
        let ak = acct.identity.clone().unwrap_or(creds(acct)?.ak);
        if let Some(id) = self
            .projects
            .lock()
            .expect("projects")
            .get(&(ak.clone(), name.to_string()))
        {
            return Ok(id.clone());
        }
        let iam = iam_endpoint(acct);
        let v = self
            .call(
                acct,
                Call {
                    op: "resolve project",
                    method: Method::GET,
                    base: &iam,
                    path: "/v3/projects",
                    query: &[("name".into(), name.into())],
                    project: None,
                    body: None,
                },
            )
            .await?;
        let id = v
            .pointer("/projects/0/id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProviderError::permanent(format!(
                    "IAM has no project named {name} (set projectId.{name} in the credentials Secret, or the destination's project)"
                ))
            })?
            .to_string();
        self.projects
            .lock()
            .expect("projects")
            .insert((ak, name.to_string()), id.clone());
        Ok(id)
    }

    async fn list(
        &self,
        acct: &Account,
        region: &str,
        project: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, ProviderError> {
        let pid = self.project_id(acct, project).await?;
        let q: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let v = self
            .call(
                acct,
                Call {
                    op: "list images",
                    method: Method::GET,
                    base: &Self::ims(acct, region),
                    path: "/v2/cloudimages",
                    query: &q,
                    project: Some(&pid),
                    body: None,
                },
            )
            .await?;
        Ok(v.get("images").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    fn dest_project(req: &CopyRequest) -> String {
        req.project.clone().unwrap_or_else(|| req.region.clone())
    }

    /// Tag a finished copy with our token and the spec's tags.
    async fn tag(&self, acct: &Account, req: &CopyRequest, image_id: &str) -> Result<(), ProviderError> {
        let project = Self::dest_project(req);
        let pid = self.project_id(acct, &project).await?;
        let mut tags: Vec<(String, String)> = vec![(TOKEN_PROPERTY.to_string(), req.token.clone())];
        tags.extend(req.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v) in tags {
            self.call(
                acct,
                Call {
                    op: "tag image",
                    method: Method::POST,
                    base: &Self::ims(acct, &req.region),
                    path: &format!("/v2/{pid}/images/{image_id}/tags"),
                    query: &[],
                    project: Some(&pid),
                    body: Some(json!({"tag": {"key": k, "value": v}})),
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn image(
        &self,
        acct: &Account,
        region: &str,
        project: &str,
        id: &str,
    ) -> Result<Option<Value>, ProviderError> {
        Ok(self
            .list(acct, region, project, &[("id", id)])
            .await?
            .into_iter()
            .next())
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let project = Self::dest_project(req);
        let tagged = self
            .list(acct, &req.region, &project, &[("tag", &token_tag(&req.token))])
            .await?;
        if let Some(img) = tagged.first() {
            return Ok(Some(CopyHandle {
                task_id: None,
                image_id: img.get("id").and_then(Value::as_str).map(String::from),
            }));
        }
        // A copy whose request was sent but whose answer (the job id) was lost: an image of our
        // name without a token tag, still being made or made since.
        let named = self.list(acct, &req.region, &project, &[("name", &req.name)]).await?;
        let untagged: Vec<&Value> = named
            .iter()
            .filter(|v| has_our_tag(v).is_none())
            .filter(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| matches!(s, "queued" | "saving" | "active"))
            })
            .collect();
        Ok(match untagged.as_slice() {
            [one] => Some(CopyHandle {
                task_id: None,
                image_id: one.get("id").and_then(Value::as_str).map(String::from),
            }),
            _ => None,
        })
    }
}

impl Huawei {
    /// The copy a finished job made: the job's `entities.image_id` if that image is in the
    /// destination region, else the one image there of our name (tagged with our token, or not
    /// tagged yet).
    async fn destination_image(
        &self,
        acct: &Account,
        req: &CopyRequest,
        named: Option<&str>,
    ) -> Result<Option<String>, ProviderError> {
        let project = Self::dest_project(req);
        if let Some(id) = named
            && self.image(acct, &req.region, &project, id).await?.is_some()
        {
            return Ok(Some(id.to_string()));
        }
        Ok(self.find(acct, req).await?.and_then(|h| h.image_id))
    }
}

impl Service for Huawei {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        self.exchange_keys(how)
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Huawei
    }

    fn can_cancel(&self) -> bool {
        false
    }

    /// A copy is listed in its region some time after its job (or the job's SUCCESS) shows.
    /// Short (a minute): the copy call takes no client token, so after a restart that finds no
    /// copy no new one is asked for within this window — the crash may have come before the
    /// call, and the destination then waits the whole window.
    fn lists_late(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn describe(&self, acct: &Account, region: &str, image: &ImageSelector) -> Result<ImageInfo, ProviderError> {
        let (k, v) = match image {
            ImageSelector::Id(id) => ("id", id.as_str()),
            ImageSelector::Name(n) => ("name", n.as_str()),
        };
        let found = self.list(acct, region, region, &[(k, v)]).await?;
        let exact = found
            .into_iter()
            .filter(|i| i.get(k).and_then(Value::as_str) == Some(v))
            .map(|i| (i.get("id").and_then(Value::as_str).unwrap_or("").to_string(), i))
            .collect();
        let raw = cloud::exactly_one("IMS", region, &format!("with {k} {v}"), exact)?;
        let mut info = parse_image(&raw);
        let whole = self
            .list(acct, region, region, &[("id", &info.id), ("__whole_image", "true")])
            .await?;
        if whole
            .iter()
            .any(|i| i.get("id").and_then(Value::as_str) == Some(info.id.as_str()))
        {
            full_ecs(&mut info, &raw);
        }
        Ok(info)
    }

    async fn candidates(&self, acct: &Account, region: &str, _pattern: &str) -> Result<Vec<ImageInfo>, ProviderError> {
        let listed = self.list(acct, region, region, &[("__imagetype", "private")]).await?;
        Ok(listed.iter().map(parse_image).collect())
    }

    async fn start_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        if let Some(h) = self.find(acct, req).await? {
            return Ok(h);
        }
        let agency = acct.agency.clone().ok_or_else(|| {
            ProviderError::permanent("Huawei IMS cross-region replication needs provider.agency".to_string())
        })?;
        let src_pid = self.project_id(acct, &req.source_region).await?;
        let mut body = json!({
            "name": req.name,
            "region": req.region,
            "project_name": Self::dest_project(req),
            "agency_name": agency,
        });
        if let Some(d) = &req.description {
            body["description"] = json!(d);
        }
        if let Some(v) = &req.vault_id {
            body["vault_id"] = json!(v);
        }
        let v = self
            .call(
                acct,
                Call {
                    op: "cross-region copy",
                    method: Method::POST,
                    base: &Self::ims(acct, &req.source_region),
                    path: &format!("/v1/cloudimages/{}/cross_region_copy", req.source.id),
                    query: &[],
                    project: Some(&src_pid),
                    body: Some(body),
                },
            )
            .await?;
        let job = v
            .get("job_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::transient("cross-region copy: the answer has no job_id"))?;
        Ok(CopyHandle {
            task_id: Some(job.to_string()),
            image_id: None,
        })
    }

    async fn find_copy(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        self.find(acct, req).await
    }

    async fn poll(&self, acct: &Account, req: &CopyRequest, handle: &CopyHandle) -> Result<TaskState, ProviderError> {
        let mut state = TaskState::running(handle.image_id.clone(), req.source.size_bytes);
        if let Some(job) = &handle.task_id {
            let pid = self.project_id(acct, &req.source_region).await?;
            // ShowJobProgress (the SDK's replacement of the deprecated ShowJob).
            let v = self
                .call(
                    acct,
                    Call {
                        op: "query job",
                        method: Method::GET,
                        base: &Self::ims(acct, &req.source_region),
                        path: &format!("/v1/cloudimages/job/{job}"),
                        query: &[],
                        project: Some(&pid),
                        body: None,
                    },
                )
                .await?;
            if let Some(p) = v.pointer("/entities/process_percent").and_then(Value::as_f64) {
                let pct = if p <= 1.0 { p * 100.0 } else { p };
                state.progress_percent = Some(pct.round().clamp(0.0, 100.0) as i32);
            }
            match v.get("status").and_then(Value::as_str).unwrap_or("") {
                "SUCCESS" => {}
                "FAIL" => {
                    let reason = v
                        .get("fail_reason")
                        .and_then(Value::as_str)
                        .or_else(|| v.get("error_code").and_then(Value::as_str))
                        .unwrap_or("no reason given");
                    state.phase = TaskPhase::Failed(format!("IMS job {job} failed: {}", cloud::short(reason)));
                    return Ok(state);
                }
                _ => return Ok(state),
            }
            // Which image `entities.image_id` names in a cross-region job (source or copy) is
            // not settled by the SDK or the reference: the copy is the image in the
            // destination region, looked up there.
            let named = v.pointer("/entities/image_id").and_then(Value::as_str);
            state.image_id = self.destination_image(acct, req, named).await?;
        }
        // A job that says SUCCESS before the copy is listed: the copy is waited for.
        let Some(id) = state.image_id.clone() else {
            state.phase = TaskPhase::Unlisted;
            return Ok(state);
        };
        match self.image(acct, &req.region, &Self::dest_project(req), &id).await? {
            None => state.phase = TaskPhase::Unlisted,
            Some(img) => match img.get("status").and_then(Value::as_str).unwrap_or("") {
                "active" => {
                    if has_our_tag(&img).as_deref() != Some(req.token.as_str()) {
                        self.tag(acct, req, &id).await?;
                    }
                    state.phase = TaskPhase::Succeeded;
                    state.progress_percent = Some(100);
                    state.bytes_done = req.source.size_bytes;
                }
                "queued" | "saving" => {}
                other => {
                    state.phase = TaskPhase::Failed(format!("destination image {id} is {other}"));
                }
            },
        }
        Ok(state)
    }

    async fn cancel(&self, _acct: &Account, _region: &str, _handle: &CopyHandle) -> Result<(), ProviderError> {
        Err(ProviderError::permanent("Huawei IMS cannot cancel a cross-region copy"))
    }

    async fn delete_image(
        &self,
        acct: &Account,
        region: &str,
        project: Option<&str>,
        image_id: &str,
    ) -> Result<(), ProviderError> {
        let pid = self.project_id(acct, project.unwrap_or(region)).await?;
        cloud::gone_is_ok(
            self.call(
                acct,
                Call {
                    op: "delete image",
                    method: Method::DELETE,
                    base: &Self::ims(acct, region),
                    path: &format!("/v2/images/{image_id}"),
                    query: &[],
                    project: Some(&pid),
                    body: None,
                },
            )
            .await,
        )
    }

    async fn image_exists(
        &self,
        acct: &Account,
        region: &str,
        project: Option<&str>,
        image_id: &str,
    ) -> Result<bool, ProviderError> {
        Ok(self
            .image(acct, region, project.unwrap_or(region), image_id)
            .await?
            .is_some_and(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| matches!(s, "active" | "queued" | "saving"))
            }))
    }

    /// `GET /v2/images/{image_id}/members` (GlanceListImageMembers): member projects and status.
    async fn members(&self, acct: &Account, at: &ImageAt) -> Result<Vec<Member>, ProviderError> {
        let pid = self
            .project_id(acct, at.project.as_deref().unwrap_or(&at.region))
            .await?;
        let v = self
            .call(
                acct,
                Call {
                    op: "list image members",
                    method: Method::GET,
                    base: &Self::ims(acct, &at.region),
                    path: &format!("/v2/images/{}/members", urlencode(&at.image_id)),
                    query: &[],
                    project: Some(&pid),
                    body: None,
                },
            )
            .await?;
        Ok(glance_members(&v))
    }

    /// `BatchAddMembers` (`POST /v1/cloudimages/members`): an asynchronous job; the member
    /// shows in the list when it is done.
    async fn share(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let body = json!({"images": [at.image_id], "projects": [account]});
        self.members_call(acct, at, "share image (BatchAddMembers)", Method::POST, body, None)
            .await
    }

    /// `BatchDeleteMembers` (`DELETE /v1/cloudimages/members`).
    async fn unshare(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let body = json!({"images": [at.image_id], "projects": [account]});
        cloud::gone_is_ok(
            self.members_call(
                acct,
                at,
                "withdraw share (BatchDeleteMembers)",
                Method::DELETE,
                body,
                None,
            )
            .await,
        )
    }

    /// As the member (its own keys, its project): `BatchUpdateMembers` status accepted.
    async fn accept(&self, member: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let body = json!({"images": [at.image_id], "project_id": account, "status": "accepted"});
        self.members_call(
            member,
            at,
            "accept share (BatchUpdateMembers)",
            Method::PUT,
            body,
            Some(account),
        )
        .await
    }
}

impl Huawei {
    /// One `/v1/cloudimages/members` call (BatchAddMembers, BatchUpdateMembers,
    /// BatchDeleteMembers): the answer is a job id, the change shows in the member list when
    /// the job is done. `project`: the caller's project (the member's, to accept).
    async fn members_call(
        &self,
        acct: &Account,
        at: &ImageAt,
        op: &str,
        method: Method,
        body: Value,
        project: Option<&str>,
    ) -> Result<(), ProviderError> {
        let pid = match project {
            Some(p) => p.to_string(),
            None => {
                self.project_id(acct, at.project.as_deref().unwrap_or(&at.region))
                    .await?
            }
        };
        let v = self
            .call(
                acct,
                Call {
                    op,
                    method,
                    base: &Self::ims(acct, &at.region),
                    path: "/v1/cloudimages/members",
                    query: &[],
                    project: Some(&pid),
                    body: Some(body),
                },
            )
            .await?;
        match v.get("job_id").and_then(Value::as_str) {
            Some(job) => self.wait_member_job(acct, &at.region, &pid, op, job).await,
            None => Ok(()),
        }
    }

    /// A member job (`ShowJobProgress`), until it ends: SUCCESS is done (the member is listed
    /// from then on), FAIL is the share's failure with the job's own error. Polled after 1 s,
    /// doubling to 8 s, for at most [`MEMBER_JOB_WAIT`]: the call that made the job is never
    /// made again while it runs (each look at the members before it ended found nothing and
    /// asked again: 1,469 BatchAddMembers for one 5 s job).
    async fn wait_member_job(
        &self,
        acct: &Account,
        region: &str,
        pid: &str,
        op: &str,
        job: &str,
    ) -> Result<(), ProviderError> {
        let started = std::time::Instant::now();
        let mut every = Duration::from_secs(1);
        loop {
            tokio::time::sleep(every).await;
            let v = self
                .call(
                    acct,
                    Call {
                        op: "query member job",
                        method: Method::GET,
                        base: &Self::ims(acct, region),
                        path: &format!("/v1/cloudimages/job/{job}"),
                        query: &[],
                        project: Some(pid),
                        body: None,
                    },
                )
                .await?;
            match v.get("status").and_then(Value::as_str).unwrap_or("") {
                "SUCCESS" => return Ok(()),
                "FAIL" => {
                    let code = v.get("error_code").and_then(Value::as_str).unwrap_or("");
                    let reason = v
                        .get("fail_reason")
                        .and_then(Value::as_str)
                        .filter(|r| !r.is_empty())
                        .unwrap_or("no reason given");
                    let code_text = if code.is_empty() {
                        String::new()
                    } else {
                        format!(" ({code})")
                    };
                    return Err(ProviderError::transient(format!(
                        "{op}: IMS job {job} failed{code_text}: {}",
                        cloud::short(reason)
                    ))
                    .with_code(code));
                }
                _ if started.elapsed() >= MEMBER_JOB_WAIT => {
                    return Err(ProviderError::transient(format!(
                        "{op}: IMS job {job} still running after {}s",
                        MEMBER_JOB_WAIT.as_secs()
                    )));
                }
                _ => every = (every * 2).min(Duration::from_secs(8)),
            }
        }
    }
}

// ---------- the cloud's facts ----------

/// Huawei Cloud's facts (see [`Cloud`]): the registry's one line for it.
pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Huawei,
    service,
    sharing: &SHARING,
    hosts: &["*.myhuaweicloud.com"],
    source_rules,
    default_name,
    spec_rules,
    free_form_regions: false,
    fields: &["vaultId", "project"],
    other_owner: Some(
        "an IMS copy stays with the tenant that replicates it; the seed's cross-account way is to replicate, share and accept: use shareWith with acceptWith",
    ),
    identity: Some(&sts::IDENTITY),
    moves_bytes: false,
};

/// IMS cross-region replication needs an IAM agency; IMS cannot encrypt a copy.
fn spec_rules(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    if spec.provider.agency.as_deref().is_none_or(str::is_empty) {
        out.push(Violation::new(
            "spec.provider.agency",
            "AgencyRequired",
            "Huawei IMS cross-region replication needs provider.agency: an IAM agency with IMS Administrator in both regions",
        ));
    }
    no_encryption(spec, out);
}

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Huawei::default())
}

/// IMS names a replica `copy_<source region>_<source name>` when none is given.
fn default_name(source_region: &str, source: &ImageInfo) -> String {
    format!("copy_{source_region}_{}", source.name)
}

/// Huawei IMS: regions between which full-ECS images can be replicated (seed: 华北-北京一,
/// 华东-上海一, 华东-上海二, 华北-北京四, 华南-广州).
pub const FULL_ECS_REGIONS: [&str; 5] = ["cn-north-1", "cn-east-3", "cn-east-2", "cn-north-4", "cn-south-1"];

/// Huawei IMS: source regions whose images may be up to 300 GB (seed: 华南-广州, 华东-上海一,
/// 华东-上海二, 华北-北京四); elsewhere the limit is 128 GB. GB read as GiB.
pub const REGIONS_300GB: [&str; 4] = ["cn-south-1", "cn-east-3", "cn-east-2", "cn-north-4"];

/// Huawei's size limit for images replicated out of `region`.
pub fn max_bytes(region: &str) -> u64 {
    if REGIONS_300GB.contains(&region) {
        300 * GIB
    } else {
        128 * GIB
    }
}

/// Huawei IMS: private images only, no ISO, encrypted or KooGallery-derived images; full-ECS images need a vault per destination, may not be replicas of backups and stay within the regions that support them; the size limit of the source region.
pub fn source_rules(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    let iso = c.iso;
    if source.visibility != "private" {
        c.refuse(
            src_field.into(),
            "NotPrivateImage",
            format!(
                "{img} is a {} image; only private images can be replicated across regions (create an ECS from it, then a private image from that ECS)",
                source.visibility
            ),
        );
    }
    if iso {
        c.refuse(
            src_field.into(),
            "IsoImageNotReplicable",
            format!("{img} is an ISO image; ISO images cannot be replicated across regions"),
        );
    }
    if source.encrypted == Some(true) {
        c.refuse(
            src_field.into(),
            "EncryptedImageNotReplicable",
            format!("{img} is encrypted; encrypted images cannot be replicated across regions"),
        );
    }
    if source.properties.get("__productcode").is_some_and(|c| !c.is_empty()) {
        c.refuse(
            src_field.into(),
            "MarketplaceDerivedImage",
            format!(
                "{img} was made from a KooGallery (marketplace) image (product {}); such private images cannot be replicated across regions",
                source.properties["__productcode"]
            ),
        );
    }
    if source.whole_machine {
        full_ecs_rules(c);
    }
    let max = max_bytes(&spec.source.region);
    if size > max {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; images replicated from {} may be at most {}",
                gib(size),
                spec.source.region,
                gib(max)
            ),
        );
    }
}

/// Huawei IMS full-ECS images: a CBR vault per destination, not themselves replicated from
/// a backup, only between the regions that support them.
fn full_ecs_rules(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.vault_id.as_deref().is_none_or(str::is_empty) {
            c.refuse(
                format!("spec.destinations[{i}].vaultId"),
                "VaultRequired",
                format!(
                    "{img} is a full-ECS image; replicating it to {} needs the CBR backup vault (vault ID, protection type Replication) in that region that will hold its backups",
                    d.region
                ),
            );
        }
    }
    // BatchUpdateMembers needs the member's own CBR vault (`vault_id`) to accept a full-ECS
    // image made from a backup (every full-ECS copy is); the spec has no field for it, so such
    // an acceptance is refused before anything starts rather than failing after the copy.
    for (i, d) in spec.destinations.iter().enumerate() {
        for (j, w) in d.share_with.iter().enumerate() {
            if w.accept_with.is_some() {
                c.refuse(
                    format!("spec.destinations[{i}].shareWith[{j}].acceptWith"),
                    "AcceptNeedsVault",
                    format!(
                        "{img} is a full-ECS image; accepting a share of it needs a CBR vault of the member account {} (BatchUpdateMembers vault_id), which the operator cannot name: remove acceptWith and accept it in that account",
                        w.account
                    ),
                );
            }
        }
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.share_with.len() > 10 {
            c.refuse(
                format!("spec.destinations[{i}].shareWith"),
                "TooManyShares",
                format!(
                    "{img} is a full-ECS image; IMS shares one with at most 10 tenants, {} are listed",
                    d.share_with.len()
                ),
            );
        }
    }
    if source.replicated_from_backup {
        c.refuse(
            src_field.into(),
            "FullEcsReplicaNotReplicable",
            format!(
                "{img} is a full-ECS image that was itself replicated from a backup; it cannot be replicated across regions again"
            ),
        );
    }
    if !FULL_ECS_REGIONS.contains(&spec.source.region.as_str()) {
        c.refuse(
            "spec.source.region".into(),
            "FullEcsRegionNotSupported",
            format!(
                "{img} is a full-ECS image; full-ECS images can only be replicated between {}, not from {}",
                FULL_ECS_REGIONS.join(", "),
                spec.source.region
            ),
        );
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        if !FULL_ECS_REGIONS.contains(&d.region.as_str()) {
            c.refuse(
                format!("spec.destinations[{i}].region"),
                "FullEcsRegionNotSupported",
                format!(
                    "{img} is a full-ECS image; full-ECS images can only be replicated between {}, not to {}",
                    FULL_ECS_REGIONS.join(", "),
                    d.region
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ims_images() {
        let raw = json!({
            "id": "i1", "name": "web", "status": "active", "__imagetype": "private", "disk_format": "zvhd2",
            "__image_size": "2147483648", "__backup_id": "b1",
            "__data_origin": "image,cn-north-4,i0", "__system__cmkid": "", "__os_version": "Ubuntu 22.04"
        });
        let mut i = parse_image(&raw);
        assert_eq!(i.visibility, "private");
        assert_eq!(i.size_bytes, Some(2 << 30));
        assert!(!i.whole_machine && i.encrypted == Some(false));
        assert_eq!(i.state, Some(ImageState::Available));
        // Found with the list API's __whole_image filter: a full-ECS replica of a backup.
        full_ecs(&mut i, &raw);
        assert!(i.whole_machine && i.replicated_from_backup);
        let g = parse_image(&json!({"id": "g", "__imagetype": "gold", "status": "saving", "__system__cmkid": "k-1"}));
        assert_eq!(g.visibility, "public");
        assert_eq!(g.encrypted, Some(true));
        assert_eq!(g.state, Some(ImageState::Creating));
    }

    #[test]
    fn classifies_errors() {
        let a = error("op", 429, r#"{"error_code":"APIG.0308","error_msg":"too many"}"#, None);
        assert!(a.throttled && a.error.retryable);
        let a = error(
            "op",
            403,
            r#"{"error":{"code":"IMG.0003","message":"no permission"}}"#,
            None,
        );
        assert!(!a.error.retryable && a.error.message.contains("IMS FullAccess"));
        let a = error(
            "op",
            400,
            r#"{"error":{"code":"IMG.0190","message":"replication quota exceeded"}}"#,
            None,
        );
        assert!(a.error.retryable && !a.throttled);
        assert!(error("op", 404, "", None).error.not_found);
        // IMS flow control: HTTP 400 without the word "quota", still backed off and retried.
        for code in ["IMG.0149", "IMG.0060"] {
            let a = error(
                "op",
                400,
                &format!(r#"{{"error":{{"code":"{code}","message":"The system is busy. Try again later."}}}}"#),
                None,
            );
            assert!(a.throttled && a.error.retryable, "{code}: {a:?}");
        }
        let a = error("op", 400, r#"{"error":{"code":"IMG.0001","message":"bad"}}"#, None);
        assert!(!a.error.retryable && !a.throttled);
    }

    #[test]
    fn the_ims_endpoint_never_stands_for_iam() {
        let mut acct = Account {
            secret: Default::default(),
            endpoint: Some("https://ims.private.example.com".into()),
            agency: None,
            identity: None,
        };
        assert_eq!(iam_endpoint(&acct), "https://iam.myhuaweicloud.com");
        acct.secret
            .insert("iamEndpoint".into(), b"https://iam.private.example.com/".to_vec());
        assert_eq!(iam_endpoint(&acct), "https://iam.private.example.com");
    }

    #[test]
    fn finds_copies_by_the_list_apis_tag_filter() {
        // GET /v2/cloudimages?tag=<key>=<value>; an image's tags read as `key=value` or `key.value`.
        assert_eq!(token_tag("t-1"), "imgrep_client_token=t-1");
        for tags in [
            json!(["team.web", "imgrep_client_token.t-1"]),
            json!(["team=web", "imgrep_client_token=t-1"]),
        ] {
            assert_eq!(has_our_tag(&json!({ "tags": tags })).as_deref(), Some("t-1"));
        }
        assert_eq!(has_our_tag(&json!({"tags": ["imgrep_client_tokenX=t-1"]})), None);
    }

    #[test]
    fn marketplace_derived_private_images_carry_their_product_code() {
        let i =
            parse_image(&json!({"id": "i", "__imagetype": "private", "status": "active", "__productcode": "00301-1"}));
        assert_eq!(i.properties.get("__productcode").map(String::as_str), Some("00301-1"));
        let i = parse_image(&json!({"id": "i", "__imagetype": "private", "status": "active", "__productcode": ""}));
        assert!(!i.properties.contains_key("__productcode"));
        // IMS has no frozen status: an unknown word is unusable, not waiting.
        let i = parse_image(&json!({"id": "i", "status": "frozen"}));
        assert_eq!(i.state, Some(ImageState::Unusable("frozen".into())));
    }
}
