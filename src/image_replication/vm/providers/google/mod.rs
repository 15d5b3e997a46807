//! The Google Compute Engine provider: the `compute/v1` REST API (JSON over HTTPS, a bearer
//! token from a service account key, see [`oauth`]).
//!
//! A Compute Engine image is a global resource of a project whose data sits in its
//! `storageLocations` (a region such as `europe-west1`, or a multi-region such as `eu`). A copy
//! "in region R" is a new image made from the source (`images.insert` with `sourceImage`) whose
//! `storageLocations` is `[R]`. Image names are global in a project, so a copy is named
//! `<name>-<region>` (at most 63 characters, RFC 1035). The insert carries a `requestId` derived
//! from our idempotency token (Compute Engine answers a repeated request with the same
//! operation) and our token as the label `imgrep_client_token`, so a copy whose answer was lost
//! is found again by label. Its `status` (`PENDING`, `READY`, `FAILED`) is the copy's state.
//! Sharing: the image's IAM policy (`getIamPolicy` / `setIamPolicy` with its `etag`) binds
//! `roles/compute.imageUser` to the account (a principal: `serviceAccount:`, `user:`, `group:`
//! or `domain:`); there is no acceptance step. `source.follow` takes a name pattern (the
//! images listed with a name filter, deprecated ones left out) or an image family,
//! `imageName: family/<family>` (`images.getFromFamily`: the family's newest image that is not
//! deprecated).

pub mod oauth;
pub mod sts;

use std::sync::Arc;

use serde_json::{Value, json};

use super::super::catalog::{Catalog, json_text};
use super::super::facts::{Check, Cloud, Sharing, source_name};
use super::super::{
    Account, CopyHandle, CopyRequest, ImageInfo, ImageSelector, ImageState, ProviderError, TOKEN_PROPERTY,
};
use crate::api::v1alpha1::{ImageReplicationSpec, ProviderKind};
use crate::api::violation::Violation;
use crate::cloud::bearer::{self, JsonCall};
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};

/// Sharing: the image's IAM policy; one policy holds at most 1,500 principals.
pub const SHARING: Sharing = Sharing {
    account_rule: "an IAM principal (serviceAccount:NAME@PROJECT.iam.gserviceaccount.com, user:EMAIL, group:EMAIL or domain:DOMAIN)",
    valid_account: valid_principal,
    member_limit: 1500,
    limit_source: "IAM quotas: principals per allow policy",
    needs_accept: false,
    // getIamPolicy reads what setIamPolicy wrote.
    members_lag: 0,
    refuses_encrypted_in_place: false,
};

/// The role a share grants: use the image (create disks and instances from it, copy it).
pub const IMAGE_USER: &str = "roles/compute.imageUser";
/// The API's root (`rootUrl` of the discovery document); `provider.endpoint` replaces it.
const ROOT: &str = "https://compute.googleapis.com";
/// `images.list`'s largest page (`maxResults`, default 500).
const PAGE: usize = 500;
/// Image names: 1 to 63 characters, RFC 1035.
pub const MAX_NAME: usize = 63;

fn valid_principal(a: &str) -> bool {
    match a.split_once(':') {
        Some(("serviceAccount" | "user" | "group", email)) => email
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.')),
        Some(("domain", d)) => d.contains('.') && !d.contains('@'),
        _ => false,
    }
}

/// Whether `name` is a Compute Engine resource name (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// A copy's name: `<name>-<region>`, the name cut so the whole is at most 63 characters.
pub fn copy_name(name: &str, region: &str) -> String {
    let keep = MAX_NAME.saturating_sub(region.len() + 1);
    let base: String = name.chars().take(keep).collect();
    format!("{}-{region}", base.trim_end_matches('-'))
}

/// Error `reason`s of Compute Engine (`error.errors[].reason`) by class; others by HTTP status.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("rateLimitExceeded", ErrorClass::Throttled),
    ("userRateLimitExceeded", ErrorClass::Throttled),
    ("RATE_LIMIT_EXCEEDED", ErrorClass::Throttled),
    ("notFound", ErrorClass::NotFound),
    ("resourceNotReady", ErrorClass::RetryLater),
    ("resourceInUseByAnotherResource", ErrorClass::RetryLater),
    ("backendError", ErrorClass::RetryLater),
    ("internalError", ErrorClass::RetryLater),
    // setIamPolicy with a stale etag: read again and retry.
    ("conditionNotMet", ErrorClass::RetryLater),
    ("quotaExceeded", ErrorClass::RetryLater),
    ("forbidden", ErrorClass::Auth),
    ("insufficientPermissions", ErrorClass::Auth),
    ("accessNotConfigured", ErrorClass::Auth),
    ("authError", ErrorClass::Auth),
    // A name taken by an image still being deleted (a failed attempt's): tried again later.
    ("alreadyExists", ErrorClass::RetryLater),
    ("invalid", ErrorClass::Permanent),
    ("badRequest", ErrorClass::Permanent),
    ("required", ErrorClass::Permanent),
];

/// One classification for an error: its reason, else its HTTP status.
pub fn classify(status: u16, reason: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, reason).unwrap_or(match status {
        // A stale etag on setIamPolicy: read again and retry.
        412 => ErrorClass::RetryLater,
        s => cloud::by_status(s),
    })
}

fn error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> Attempt {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let e = v.get("error").cloned().unwrap_or(Value::Null);
    let reason = e
        .pointer("/errors/0/reason")
        .and_then(Value::as_str)
        .or_else(|| e.get("status").and_then(Value::as_str))
        .unwrap_or("");
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(cloud::short)
        .unwrap_or_else(|| cloud::short(body));
    cloud::attempt(
        classify(status, reason),
        reason,
        format!("{op}: HTTP {status} {reason}: {message}"),
        "check the service account key and that its role on the project includes the compute.images permissions",
        retry_after,
    )
}

fn image_state(status: &str) -> ImageState {
    match status {
        "READY" => ImageState::Available,
        "PENDING" => ImageState::Creating,
        other => ImageState::Unusable(other.to_ascii_lowercase()),
    }
}

/// Parse one Compute Engine `Image`.
pub fn parse_image(v: &Value) -> ImageInfo {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    ImageInfo {
        id: id_of(v),
        name: s("name").unwrap_or_default(),
        size_bytes: s("diskSizeGb").and_then(|g| g.parse::<u64>().ok()).map(|g| g << 30),
        disk_format: None,
        container_format: None,
        visibility: "private".into(),
        encrypted: Some(v.get("imageEncryptionKey").is_some()),
        state: s("status").map(|st| image_state(&st)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: false,
        digest: None,
        checksum: None,
        properties: Default::default(),
        created_at: s("creationTimestamp"),
        carried: Default::default(),
    }
}

/// An image's id: its resource name `projects/<project>/global/images/<name>` (what instance
/// templates, Terraform and `gcloud --image` take), from its `selfLink`; its name without one.
pub fn id_of(image: &Value) -> String {
    let link = json_text(image, "selfLink");
    match link.find("projects/") {
        Some(i) => link[i..].to_string(),
        None => json_text(image, "name"),
    }
}

/// Where the images of `id` (a resource name `projects/<p>/global/images/...`, or a bare name or
/// pattern in the provider's project) are listed: `projects/<p>/global/images`, else `images`.
pub fn collection_of(id: &str) -> String {
    match id
        .strip_prefix("projects/")
        .and_then(|r| r.split_once("/global/images/"))
    {
        Some((project, _)) => format!("projects/{project}/global/images"),
        None => "images".into(),
    }
}

/// A name, pattern or `family/<f>` without the `projects/<p>/global/images/` it may start with.
pub fn local_pattern(p: &str) -> &str {
    p.strip_prefix("projects/")
        .and_then(|r| r.split_once("/global/images/"))
        .map_or(p, |(_, rest)| rest)
}

/// The image name an id (a resource name, or a bare name) stands for.
pub fn name_in(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The root of Compute Engine's resource URLs (`selfLink`), as a deprecation's `replacement`.
const SELF_LINK_ROOT: &str = "https://www.googleapis.com/compute/v1";

/// Why a finished operation failed (`status: DONE` with `error.errors`), else `None`.
pub fn operation_error(op: &Value) -> Option<String> {
    if op.get("status").and_then(Value::as_str) != Some("DONE") {
        return None;
    }
    let errors = op.pointer("/error/errors").and_then(Value::as_array)?;
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", json_text(e, "code"), cloud::short(&json_text(e, "message"))))
        .collect();
    (!text.is_empty()).then(|| format!("the insert failed: {}", text.join("; ")))
}

/// How `source.imageName` names an image family.
pub const FAMILY: &str = "family/";

/// Whether the image is deprecated (`DEPRECATED`, `OBSOLETE`, `DELETED`): not one to follow.
fn deprecated(image: &Value) -> bool {
    image
        .pointer("/deprecated/state")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "ACTIVE")
}

/// Whether the image's data sits in `region`.
fn stored_in(image: &Value, region: &str) -> bool {
    image
        .get("storageLocations")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|r| r.as_str() == Some(region)))
}

/// The Google Compute Engine provider.
pub struct Google {
    http: reqwest::Client,
    backoff: Backoff,
    tokens: oauth::Tokens,
}

impl Default for Google {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

impl Google {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            backoff,
            tokens: oauth::Tokens::default(),
        }
    }

    /// The project the account's images are in: the Secret's `project`, else its key's.
    fn project(acct: &Account) -> Result<String, ProviderError> {
        if let Some(p) = acct.text("project") {
            return Ok(p);
        }
        if sts::handed_out(acct).is_some() {
            return Err(ProviderError::permanent(
                "no project for the workload identity: set GOOGLE_CLOUD_PROJECT in the operator's environment",
            ));
        }
        let key = oauth::Key::read(acct)?;
        Some(key.project_id).filter(|p| !p.is_empty()).ok_or_else(|| {
            ProviderError::permanent("the key file names no project_id; add project to the credentials Secret")
        })
    }

    /// The account's bearer token: handed out (workload identity, an impersonated service
    /// account), else from its key file.
    async fn token_of(&self, acct: &Account) -> Result<String, ProviderError> {
        match sts::handed_out(acct) {
            Some(t) => Ok(t),
            None => self.tokens.get(&self.http, acct).await,
        }
    }

    /// One call: `method` on `projects/{project}/global/<path>`, with the account's token.
    async fn call(
        &self,
        acct: &Account,
        op: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ProviderError> {
        let root = cloud::endpoint(acct.endpoint.as_deref(), ROOT, "");
        let project = Self::project(acct)?;
        // A path that names its project (an image of another project: a public image project) is
        // used as it is; others are in the provider's project.
        let full = if path.starts_with("projects/") {
            path.to_string()
        } else {
            format!("projects/{project}/global/{path}")
        };
        let mut url = reqwest::Url::parse(&format!("{root}/compute/v1/{full}"))
            .map_err(|e| ProviderError::permanent(format!("{op}: bad endpoint {root}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let retry = method == reqwest::Method::GET;
        let call = JsonCall {
            op,
            method,
            url,
            body,
            retry,
        };
        bearer::json_call(&self.http, &self.backoff, call, || self.token_of(acct), error).await
    }

    /// `images.list`, every page (`maxResults` 500, `pageToken` on), with a `filter`.
    async fn list(&self, acct: &Account, images: &str, filter: &str) -> Result<Vec<Value>, ProviderError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..cloud::MAX_PAGES {
            let mut q = vec![("maxResults", PAGE.to_string())];
            if !filter.is_empty() {
                q.push(("filter", filter.to_string()));
            }
            if let Some(t) = &token {
                q.push(("pageToken", t.clone()));
            }
            let v = self
                .call(acct, "images.list", reqwest::Method::GET, images, &q, None)
                .await?;
            out.extend(v.get("items").and_then(Value::as_array).cloned().unwrap_or_default());
            token = v.get("nextPageToken").and_then(Value::as_str).map(String::from);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The family's newest image that is not deprecated (`images.getFromFamily`), if any.
    async fn family_newest(&self, acct: &Account, images: &str, family: &str) -> Result<Option<Value>, ProviderError> {
        let path = format!("{images}/family/{family}");
        match self
            .call(acct, "images.getFromFamily", reqwest::Method::GET, &path, &[], None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, acct: &Account, id: &str) -> Result<Option<Value>, ProviderError> {
        let (images, name) = (collection_of(id), name_in(id));
        match self
            .call(
                acct,
                "images.get",
                reqwest::Method::GET,
                &format!("{images}/{name}"),
                &[],
                None,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn policy(&self, acct: &Account, id: &str) -> Result<Value, ProviderError> {
        self.call(
            acct,
            "images.getIamPolicy",
            reqwest::Method::GET,
            &format!("{}/{}/getIamPolicy", collection_of(id), name_in(id)),
            &[],
            None,
        )
        .await
    }
}

/// An `images.list` filter for the names a glob matches (`name eq <RE2>`, anchored by the API);
/// none for `*` or an empty pattern.
pub fn name_filter(glob: &str) -> String {
    if glob.is_empty() || glob == "*" {
        return String::new();
    }
    let re: String = glob
        .chars()
        .map(|c| match c {
            '*' => ".*".to_string(),
            '?' => ".".to_string(),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c.to_string(),
            c => format!("\\{c}"),
        })
        .collect();
    format!("name eq {re}")
}

/// The policy with `account` bound to [`IMAGE_USER`] (`add`) or unbound; `None` when it
/// already is as wanted.
pub fn bind(policy: &Value, account: &str, add: bool) -> Option<Value> {
    let mut p = policy.clone();
    let bindings = p
        .as_object_mut()?
        .entry("bindings")
        .or_insert_with(|| json!([]))
        .as_array_mut()?;
    let has = bindings.iter().any(|b| {
        b.get("role").and_then(Value::as_str) == Some(IMAGE_USER)
            && b.get("members")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(account)))
    });
    if has == add {
        return None;
    }
    if add {
        match bindings
            .iter_mut()
            .find(|b| b.get("role").and_then(Value::as_str) == Some(IMAGE_USER))
        {
            Some(b) => b["members"].as_array_mut()?.push(json!(account)),
            None => bindings.push(json!({"role": IMAGE_USER, "members": [account]})),
        }
    } else {
        for b in bindings
            .iter_mut()
            .filter(|b| b.get("role").and_then(Value::as_str) == Some(IMAGE_USER))
        {
            b["members"].as_array_mut()?.retain(|x| x.as_str() != Some(account));
        }
        bindings.retain(|b| {
            b.get("members")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty())
        });
    }
    Some(p)
}

impl Catalog for Google {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        self.exchange_token(how)
    }

    type Image = Value;
    const KIND: ProviderKind = ProviderKind::Google;
    const SERVICE: &'static str = "Compute Engine";
    const CAN_CANCEL: bool = false;
    /// `requestId`: a repeated insert is the same request.
    const START_IDEMPOTENT: bool = true;
    /// Kept copies of earlier sources are deprecated in favour of the current one.
    const MARKS_SUPERSEDED: bool = true;

    async fn lookup(
        &self,
        acct: &Account,
        _region: &str,
        selector: &ImageSelector,
    ) -> Result<Vec<Value>, ProviderError> {
        let name = match selector {
            ImageSelector::Id(v) | ImageSelector::Name(v) => v,
        };
        Ok(self.get(acct, name).await?.into_iter().collect())
    }

    async fn own_images(&self, acct: &Account, region: &str, pattern: &str) -> Result<Vec<Value>, ProviderError> {
        // A pattern may name another project's images (`projects/<p>/global/images/...`).
        let (images, pattern) = (collection_of(pattern), local_pattern(pattern));
        // An image family: Compute Engine answers with its newest image not deprecated.
        let listed = match pattern.strip_prefix(FAMILY) {
            Some(family) => self.family_newest(acct, &images, family).await?.into_iter().collect(),
            // The listing filters names (RE2, whole name); storage locations are kept here.
            None => self.list(acct, &images, &name_filter(pattern)).await?,
        };
        Ok(listed
            .into_iter()
            .filter(|i| stored_in(i, region) && !deprecated(i))
            .collect())
    }

    /// A family's look-up answers for the family itself; a pattern matches names.
    fn follows(pattern: &str, image: &ImageInfo) -> bool {
        let pattern = local_pattern(pattern);
        pattern.starts_with(FAMILY) || crate::image_replication::vm::glob::glob_match(pattern, &image.name)
    }

    async fn image(&self, acct: &Account, _region: &str, id: &str) -> Result<Option<Value>, ProviderError> {
        self.get(acct, id).await
    }

    fn id(image: &Value) -> String {
        id_of(image)
    }

    fn is(image: &Value, id: &str) -> bool {
        json_text(image, "name") == name_in(id)
    }

    fn name(image: &Value) -> String {
        json_text(image, "name")
    }

    fn parse(image: &Value) -> ImageInfo {
        parse_image(image)
    }

    fn state(image: &Value) -> (ImageState, Option<i32>) {
        (
            image_state(image.get("status").and_then(Value::as_str).unwrap_or("")),
            None,
        )
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let filter = format!("labels.{TOKEN_PROPERTY}={}", req.token);
        Ok(self
            .list(acct, "images", &filter)
            .await?
            .into_iter()
            .find(|i| {
                i.pointer(&format!("/labels/{TOKEN_PROPERTY}")).and_then(Value::as_str) == Some(req.token.as_str())
            })
            .map(|i| CopyHandle::of_image(id_of(&i))))
    }

    async fn request_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let project = Self::project(acct)?;
        let name = copy_name(&req.name, &req.region);
        let mut labels = serde_json::Map::new();
        labels.insert(TOKEN_PROPERTY.into(), json!(req.token));
        let mut body = json!({
            "name": name,
        "sourceImage": if req.source.id.starts_with("projects/") {
                req.source.id.clone()
            } else {
                format!("projects/{project}/global/images/{}", name_in(&req.source.id))
            },
            "storageLocations": [req.region],
            "labels": labels,
        });
        if let Some(d) = &req.description {
            body["description"] = json!(d);
        }
        if let Some(k) = &req.kms_key_id {
            body["imageEncryptionKey"] = json!({"kmsKeyName": k});
        }
        let q = [("requestId", cloud::uuid_from(&req.token))];
        let op = self
            .call(acct, "images.insert", reqwest::Method::POST, "images", &q, Some(body))
            .await?;
        Ok(CopyHandle {
            // The insert's operation: what says why a refused insert made no image.
            task_id: op.get("name").and_then(Value::as_str).map(String::from),
            image_id: Some(format!("projects/{project}/global/images/{name}")),
        })
    }

    /// The insert's operation (`globalOperations.get`), when the image is not listed: `DONE`
    /// with an `error` (an organization policy on locations, a quota met after the call) made
    /// no image.
    async fn task_failure(&self, acct: &Account, handle: &CopyHandle) -> Result<Option<String>, ProviderError> {
        // An operation's name (`operation-...`); a copy found by its label after a restart has none.
        let Some(op) = handle.task_id.as_deref().filter(|o| o.starts_with("operation-")) else {
            return Ok(None);
        };
        let v = match self
            .call(
                acct,
                "globalOperations.get",
                reqwest::Method::GET,
                &format!("operations/{op}"),
                &[],
                None,
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.not_found => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(operation_error(&v))
    }

    async fn cancel(&self, _acct: &Account, _region: &str, _handle: &CopyHandle) -> Result<(), ProviderError> {
        Err(ProviderError::permanent("Compute Engine cannot cancel an image insert"))
    }

    /// `images.deprecate`: `DEPRECATED` with the current copy as its `replacement` (users of the
    /// old copy are told which image to take; families and our own follow skip it). Setting
    /// the same state again changes nothing.
    async fn supersede(&self, acct: &Account, _region: &str, id: &str, by: &str) -> Result<(), ProviderError> {
        let body = json!({"state": "DEPRECATED", "replacement": format!("{SELF_LINK_ROOT}/{by}")});
        self.call(
            acct,
            "images.deprecate",
            reqwest::Method::POST,
            &format!("{}/{}/deprecate", collection_of(id), name_in(id)),
            &[],
            Some(body),
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, acct: &Account, _region: &str, id: &str) -> Result<(), ProviderError> {
        let r = self
            .call(
                acct,
                "images.delete",
                reqwest::Method::DELETE,
                &format!("{}/{}", collection_of(id), name_in(id)),
                &[],
                None,
            )
            .await;
        cloud::gone_is_ok(r)
    }

    async fn shared_with(&self, acct: &Account, _region: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        let p = self.policy(acct, id).await?;
        Ok(p.get("bindings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|b| b.get("role").and_then(Value::as_str) == Some(IMAGE_USER))
            .flat_map(|b| b.get("members").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|m| m.as_str().map(String::from))
            .collect())
    }

    async fn set_share(
        &self,
        acct: &Account,
        _region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        // Read, change, write with the etag read: a concurrent change is `conditionNotMet`
        // (retried later, reading again).
        let p = self.policy(acct, id).await?;
        let Some(changed) = bind(&p, account, add) else {
            return Ok(());
        };
        let body = json!({"policy": changed});
        self.call(
            acct,
            "images.setIamPolicy",
            reqwest::Method::POST,
            &format!("{}/{}/setIamPolicy", collection_of(id), name_in(id)),
            &[],
            Some(body),
        )
        .await
        .map(|_| ())
    }
}

pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Google,
    service,
    sharing: &SHARING,
    hosts: &[
        "compute.googleapis.com",
        "oauth2.googleapis.com",
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
    ],
    source_rules,
    default_name: source_name,
    spec_rules,
    free_form_regions: false,
    fields: &[],
    // A copy in another project: the source shared with `account.id` (its copier's principal),
    // the copy inserted with `account.credentialsSecretRef`'s key, in that key's project.
    other_owner: None,
    identity: Some(&sts::IDENTITY),
    moves_bytes: false,
};

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Google::default())
}

/// A copy's name must be a resource name: the spec's `name` (or the source's) with the region.
fn spec_rules(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    let name = spec.source.image_name.as_deref().unwrap_or("");
    let family = local_pattern(name).strip_prefix(FAMILY);
    if let Some(family) = family
        && !valid_name(family)
    {
        out.push(Violation::new(
            "spec.source.imageName",
            "InvalidName",
            format!("{family} is not an image family name: lowercase letters, digits and '-', starting with a letter, at most {MAX_NAME} characters"),
        ));
    }
    // A family, or a name in another project (`projects/<p>/global/images/...`), is looked up
    // by follow; one image of another project is named by source.imageId.
    if (family.is_some() || local_pattern(name) != name) && spec.source.follow.is_none() {
        out.push(Violation::new(
            "spec.source.imageName",
            "FollowRequired",
            "an image family, or a name in another project, is followed: set source.follow: Newest (or name one image with source.imageId, e.g. projects/debian-cloud/global/images/<name>)",
        ));
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.account.as_ref().is_some_and(|a| a.assume_role.is_some()) {
            out.push(Violation::new(
                format!("spec.destinations[{i}].account.assumeRole"),
                "FieldNotSupported",
                "a copy in another project is made with that project's service account key (account.credentialsSecretRef, its project_id or project key); an impersonated service account does not say which project",
            ));
        }
        if let Some(n) = &d.name
            && !valid_name(&copy_name(n, &d.region))
        {
            out.push(Violation::new(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "Compute Engine names a copy <name>-<region> ({}), which must be lowercase letters, digits and '-', starting with a letter, at most {MAX_NAME} characters",
                    copy_name(n, &d.region)
                ),
            ));
        }
    }
}

fn source_rules(c: &mut Check<'_>) {
    let spec = c.spec;
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.name.is_none() && d.region != spec.source.region && !valid_name(&copy_name(&c.source.name, &d.region)) {
            c.refuse(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "the copy would be named {}, not a Compute Engine resource name; set destinations[{i}].name",
                    copy_name(&c.source.name, &d.region)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image family is followed (not resolved once) and must be a resource name.
    #[test]
    fn an_image_family_needs_follow_and_a_valid_name() {
        let o: crate::api::ImageReplication =
            serde_yaml::from_str(include_str!("../../../../../deploy/examples/google.yaml")).unwrap();
        let mut s = o.spec.clone();
        s.source.image_name = Some("family/golden".into());
        assert_eq!(crate::validation::image_replication(&s), vec![]);
        s.source.follow = None;
        s.source.check_interval = None;
        s.retention = None;
        s.source.image_name = Some("family/Golden_1".into());
        let got = crate::validation::image_replication(&s);
        let reasons: Vec<(&str, &str)> = got.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("spec.source.imageName", "InvalidName"),
                ("spec.source.imageName", "FollowRequired")
            ],
            "{got:?}"
        );
        let info = ImageInfo {
            name: "golden-7".into(),
            ..parse_image(&json!({}))
        };
        assert!(
            <Google as Catalog>::follows("family/golden", &info) && <Google as Catalog>::follows("golden-*", &info)
        );
        assert!(!<Google as Catalog>::follows("silver-*", &info));
        assert!(
            deprecated(&json!({"deprecated": {"state": "OBSOLETE"}}))
                && !deprecated(&json!({"deprecated": {"state": "ACTIVE"}}))
        );
    }

    /// Another project's images: read where their resource name says; a name there is followed.
    #[test]
    fn another_projects_images_are_read_there() {
        let public = "projects/debian-cloud/global/images/family/debian-12";
        assert_eq!(collection_of(public), "projects/debian-cloud/global/images");
        assert_eq!(local_pattern(public), "family/debian-12");
        assert_eq!(
            (collection_of("golden-*"), local_pattern("golden-*")),
            ("images".into(), "golden-*")
        );
        let o: crate::api::ImageReplication =
            serde_yaml::from_str(include_str!("../../../../../deploy/examples/google.yaml")).unwrap();
        let mut s = o.spec.clone();
        s.source.image_name = Some(public.into());
        assert_eq!(crate::validation::image_replication(&s), vec![]);
        s.source.image_name = Some("projects/debian-cloud/global/images/debian-12-bookworm-v1".into());
        s.source.follow = None;
        s.source.check_interval = None;
        s.retention = None;
        let got = crate::validation::image_replication(&s);
        assert_eq!(
            got.iter().map(|v| v.reason).collect::<Vec<_>>(),
            ["FollowRequired"],
            "{got:?}"
        );
        assert!(got[0].message.contains("source.imageId"));
    }

    #[test]
    fn an_operations_error_is_read_only_when_it_is_done() {
        let err =
            json!({"errors": [{"code": "CONDITION_NOT_MET", "message": "Location ME-CENTRAL2 violates constraint"}]});
        assert_eq!(
            operation_error(&json!({"status": "DONE", "error": err})).as_deref(),
            Some("the insert failed: CONDITION_NOT_MET: Location ME-CENTRAL2 violates constraint")
        );
        assert_eq!(operation_error(&json!({"status": "RUNNING", "error": err})), None);
        assert_eq!(operation_error(&json!({"status": "DONE"})), None);
    }

    #[test]
    fn names_principals_and_request_ids() {
        assert_eq!(copy_name("golden-1", "europe-west1"), "golden-1-europe-west1");
        let long = "a".repeat(70);
        let n = copy_name(&long, "us-central1");
        assert_eq!(n.len(), MAX_NAME);
        assert!(valid_name(&n) && n.ends_with("-us-central1"));
        assert!(!valid_name("Golden") && !valid_name("1-a") && !valid_name("a-") && valid_name("a"));
        assert!(valid_principal("serviceAccount:copier@proj-b.iam.gserviceaccount.com"));
        assert!(valid_principal("group:ops@example.com") && valid_principal("domain:example.com"));
        assert!(!valid_principal("proj-b") && !valid_principal("user:nobody") && !valid_principal("allUsers"));
        assert_eq!(name_filter("golden-*"), "name eq golden-.*");
        assert_eq!(name_filter("web.v?"), "name eq web\\.v.");
        assert_eq!(name_filter("*"), "");
        let r = cloud::uuid_from("imgrep-0123-1");
        assert_eq!(r.len(), 36);
        assert_eq!(r, cloud::uuid_from("imgrep-0123-1"));
        assert_ne!(r, cloud::uuid_from("imgrep-0123-2"));
    }

    /// The example a new user starts from is valid as it stands.
    #[test]
    fn the_example_is_valid() {
        let o: crate::api::ImageReplication =
            serde_yaml::from_str(include_str!("../../../../../deploy/examples/google.yaml")).unwrap();
        assert_eq!(crate::validation::image_replication(&o.spec), vec![]);
        assert_eq!(o.spec.provider.kind, ProviderKind::Google);
    }

    /// What Compute Engine cannot do is refused before any call, naming the field and the rule.
    #[test]
    fn refuses_what_compute_engine_cannot_do_before_any_call() {
        let spec = || -> ImageReplicationSpec {
            serde_yaml::from_str(
                r#"
provider: {kind: google, credentialsSecretRef: {name: creds}}
source: {region: us-central1, imageName: golden}
destinations: [{region: europe-west1, shareWith: [{account: "group:ops@example.com"}]}]
"#,
            )
            .unwrap()
        };
        assert_eq!(crate::validation::image_replication(&spec()), vec![]);
        type Row = (fn(&mut ImageReplicationSpec), &'static str, &'static str);
        let rows: [Row; 5] = [
            (
                |s| s.destinations[0].name = Some("Golden_1".into()),
                "spec.destinations[0].name",
                "InvalidName",
            ),
            (
                |s| s.destinations[0].share_with[0].account = "123456".into(),
                "spec.destinations[0].shareWith[0].account",
                "InvalidShareAccount",
            ),
            (
                |s| {
                    s.destinations[0].account = Some(
                        serde_json::from_value(json!({"id": "other", "credentialsSecretRef": {"name": "b"}})).unwrap(),
                    )
                },
                "spec.destinations[0].account.id",
                "InvalidShareAccount",
            ),
            (
                |s| {
                    s.destinations[0].account = Some(
                        serde_json::from_value(json!({"id": "serviceAccount:copier@team-b.iam.gserviceaccount.com",
                            "assumeRole": {"roleArn": "copier@team-b.iam.gserviceaccount.com"}}))
                        .unwrap(),
                    )
                },
                "spec.destinations[0].account.assumeRole",
                "FieldNotSupported",
            ),
            (
                |s| {
                    s.provider.assume_role =
                        Some(serde_json::from_value(json!({"roleArn": "arn:aws:iam::1:role/x"})).unwrap())
                },
                "spec.provider.assumeRole.roleArn",
                "InvalidRole",
            ),
        ];
        for (change, field, reason) in rows {
            let mut s = spec();
            change(&mut s);
            let got = crate::validation::image_replication(&s);
            assert_eq!(
                got.iter().map(|v| (v.field.as_str(), v.reason)).collect::<Vec<_>>(),
                [(field, reason)],
                "{got:?}"
            );
        }
    }

    #[test]
    fn parses_images_errors_and_policies() {
        let i = parse_image(&json!({"name": "golden-1", "status": "PENDING", "diskSizeGb": "10",
            "creationTimestamp": "2026-11-30T08:00:00.000-08:00", "storageLocations": ["us-central1"]}));
        assert_eq!(
            (i.id.as_str(), i.size_bytes, i.state),
            ("golden-1", Some(10 << 30), Some(ImageState::Creating))
        );
        // With its selfLink, an image's id is its resource name; either names it.
        let v = json!({"name": "golden-1", "selfLink": "https://compute.googleapis.com/compute/v1/projects/p1/global/images/golden-1"});
        assert_eq!(parse_image(&v).id, "projects/p1/global/images/golden-1");
        assert!(
            <Google as Catalog>::is(&v, "golden-1")
                && <Google as Catalog>::is(&v, "projects/p1/global/images/golden-1")
        );
        assert!(!<Google as Catalog>::is(&v, "golden-10"));
        let e = error(
            "images.get",
            404,
            r#"{"error":{"code":404,"message":"The resource 'x' was not found","errors":[{"reason":"notFound"}]}}"#,
            None,
        );
        assert!(e.error.not_found && e.error.is("notFound"));
        let t = error(
            "images.list",
            403,
            r#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"reason":"rateLimitExceeded"}]}}"#,
            None,
        );
        assert!(t.throttled);
        assert!(
            error(
                "images.insert",
                403,
                r#"{"error":{"errors":[{"reason":"forbidden"}]}}"#,
                None
            )
            .error
            .auth
        );
        let p = json!({"etag": "BwX", "bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"]}]});
        let added = bind(&p, "group:g@x.io", true).unwrap();
        assert_eq!(
            added["bindings"][1],
            json!({"role": IMAGE_USER, "members": ["group:g@x.io"]})
        );
        assert_eq!(added["etag"], "BwX", "written with the etag read");
        assert!(bind(&added, "group:g@x.io", true).is_none(), "already shared: no write");
        let removed = bind(&added, "group:g@x.io", false).unwrap();
        assert_eq!(removed["bindings"].as_array().unwrap().len(), 1);
    }
}
