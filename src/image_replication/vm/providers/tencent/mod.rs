//! The Tencent Cloud CVM provider: API 3.0 (JSON POST, `Version=2017-03-12`) signed with
//! `TC3-HMAC-SHA256` (optional `X-TC-Token` for temporary credentials).
//!
//! `SyncImages` copies one custom image to the destination regions; a `DryRun` call checks first
//! that the sync can start (region support, image state) so a refusal comes before any work.
//! The destination image id comes back with `ImageSetRequired`; its state and `SyncPercent` come
//! from `DescribeImages` in the destination region; `DeleteImages` removes it. SyncImages takes
//! no client token or tags, so a copy whose answer was lost is found by its name in the
//! destination region, created no earlier than the attempt started.

use serde_json::{Value, json};

use super::super::catalog::{Catalog, json_text};
use super::super::facts::Sharing;
use super::super::{Account, CopyHandle, CopyRequest, ImageInfo, ImageSelector, ImageState, ProviderError};
use std::sync::Arc;

use crate::api::v1alpha1::ImageReplicationSpec;
use crate::api::v1alpha1::ProviderKind;
use crate::api::violation::Violation;
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};
use crate::image_replication::vm::facts::{Check, Cloud, source_name};
use crate::image_replication::vm::rules::destination_name;

/// CVM sharing (`ModifyImageSharePermission` SHARE/CANCEL): a custom image with at most 500
/// accounts in the same region; no acceptance step.
pub const SHARING: Sharing = Sharing {
    account_rule: "a Tencent Cloud account id (digits only, e.g. 100000000001)",
    valid_account: |a| (5..=20).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()),
    member_limit: 500,
    limit_source: "CVM API reference, ModifyImageSharePermission",
    needs_accept: false,
    // CVM lists are eventually consistent.
    members_lag: 60,
    refuses_encrypted_in_place: false,
};

const CVM: &str = "https://cvm.tencentcloudapi.com";
const VERSION: &str = "2017-03-12";
const GIB: u64 = 1 << 30;
/// ModifyImageSharePermission SHARE with an account the image is shared with already.
const ACCOUNT_ALREADY_EXISTS: &str = "FailedOperation.AccountAlreadyExists";
/// `DescribeImages`' largest page (`Limit`).
const PAGE: usize = 100;
/// Clock skew allowed between the operator and the cloud when matching a copy by creation time.
const SKEW_SECONDS: i64 = 300;

/// The Tencent Cloud CVM provider.
#[derive(Clone)]
pub struct Tencent {
    http: reqwest::Client,
    backoff: Backoff,
}

impl Default for Tencent {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

/// Classify an API 3.0 error (`Response.Error.Code`) of `service`.
fn error(service: &str, action: &str, code: &str, message: &str) -> Attempt {
    cloud::attempt(
        classify(code),
        code,
        format!("{action}: {code}: {message}"),
        &format!("check the SecretId/SecretKey and that the CAM policy allows {service}:{action}"),
        None,
    )
}

/// API 3.0 error codes of CVM and TCR (their SDKs' `errorcodes.py` and the common codes), by
/// exact code or `prefix*`; every code the SDKs list falls under an entry (tested).
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("RequestLimitExceeded", ErrorClass::Throttled),
    ("RequestLimitExceeded*", ErrorClass::Throttled),
    // Not found: the `.NotFound` family of ids and TCR's `ResourceNotFound.*`, `ErrNotExist`.
    ("ResourceNotFound", ErrorClass::NotFound),
    ("ResourceNotFound.*", ErrorClass::NotFound),
    ("InternalError.ErrNotExist", ErrorClass::NotFound),
    ("InvalidImageId.NotFound", ErrorClass::NotFound),
    ("InvalidInstanceId.NotFound", ErrorClass::NotFound),
    ("InvalidRegion.NotFound", ErrorClass::Permanent),
    ("InternalError", ErrorClass::RetryLater),
    ("InternalError.*", ErrorClass::RetryLater),
    ("InternalServerError", ErrorClass::RetryLater),
    ("ServiceUnavailable", ErrorClass::RetryLater),
    ("ResourceInUse", ErrorClass::RetryLater),
    ("ResourceInUse.*", ErrorClass::RetryLater),
    ("ResourceUnavailable*", ErrorClass::RetryLater),
    ("ResourceInsufficient*", ErrorClass::RetryLater),
    ("MutexOperation*", ErrorClass::RetryLater),
    ("InvalidImageId.IncorrectState", ErrorClass::RetryLater),
    ("InvalidInstanceState*", ErrorClass::RetryLater),
    ("LimitExceeded", ErrorClass::RetryLater),
    ("LimitExceeded.*", ErrorClass::RetryLater),
    ("ImageQuotaLimitExceeded", ErrorClass::RetryLater),
    ("InstancesQuotaLimitExceeded", ErrorClass::RetryLater),
    // ModifyImageSharePermission: 500 accounts at most; more cannot succeed by waiting.
    ("OverQuota", ErrorClass::Permanent),
    ("AuthFailure*", ErrorClass::Auth),
    ("UnauthorizedOperation*", ErrorClass::Auth),
    ("AccountQualificationRestrictions", ErrorClass::Auth),
    ("InvalidAccount*", ErrorClass::Auth),
    // A share's account, not the caller's keys: a wrong account id, or the caller's own.
    ("InvalidAccountId.NotFound", ErrorClass::Permanent),
    ("InvalidAccountIs.YourSelf", ErrorClass::Permanent),
    // The SDK's "the image is busy, retry later" (a sync or another share under way).
    ("FailedOperation.InvalidImageState", ErrorClass::RetryLater),
    ("InvalidParameterValue.InvalidImageState", ErrorClass::RetryLater),
    ("OperationDenied*", ErrorClass::Permanent),
    ("FailedOperation*", ErrorClass::Permanent),
    ("InvalidParameter*", ErrorClass::Permanent),
    ("InvalidFilter*", ErrorClass::Permanent),
    ("InvalidImage*", ErrorClass::Permanent),
    ("InvalidInstance*", ErrorClass::Permanent),
    ("InvalidRegion*", ErrorClass::Permanent),
    ("InvalidZone*", ErrorClass::Permanent),
    ("InvalidHost*", ErrorClass::Permanent),
    ("InvalidKeyPair*", ErrorClass::Permanent),
    ("InvalidClientToken*", ErrorClass::Permanent),
    ("InvalidPassword*", ErrorClass::Permanent),
    ("InvalidPeriod*", ErrorClass::Permanent),
    ("InvalidPermission*", ErrorClass::Permanent),
    ("InvalidProjectId*", ErrorClass::Permanent),
    ("InvalidPublicKey*", ErrorClass::Permanent),
    ("InvalidSecurityGroupId*", ErrorClass::Permanent),
    ("InvalidSgId*", ErrorClass::Permanent),
    ("InvalidAction", ErrorClass::Permanent),
    ("InvalidRequest", ErrorClass::Permanent),
    ("MissingParameter*", ErrorClass::Permanent),
    ("UnknownParameter*", ErrorClass::Permanent),
    ("UnsupportedOperation*", ErrorClass::Permanent),
    ("UnsupportedRegion", ErrorClass::Permanent),
    ("UnsupportedProtocol", ErrorClass::Permanent),
    ("RegionAbilityLimit*", ErrorClass::Permanent),
    ("ResourcesSoldOut*", ErrorClass::Permanent),
    ("EniNotAllowedChangeSubnet", ErrorClass::Permanent),
    ("SecGroupActionFailure", ErrorClass::Permanent),
    ("VpcAddrNotInSubNet", ErrorClass::Permanent),
    ("VpcIpIsUsed", ErrorClass::Permanent),
    ("DryRunOperation", ErrorClass::Permanent),
    ("ActionOffline", ErrorClass::Permanent),
    ("NoSuchProduct", ErrorClass::Permanent),
    ("NoSuchVersion", ErrorClass::Permanent),
    ("IpInBlacklist", ErrorClass::Auth),
    ("IpNotInWhitelist", ErrorClass::Auth),
    ("RequestSizeLimitExceeded", ErrorClass::Permanent),
    ("ResponseSizeLimitExceeded", ErrorClass::Permanent),
];

/// One classification for an API 3.0 error code (the answer is HTTP 200 whatever the error).
pub fn classify(code: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, code).unwrap_or(ErrorClass::Permanent)
}

fn image_state(state: &str) -> ImageState {
    match state {
        "NORMAL" | "USING" => ImageState::Available,
        "CREATING" | "SYNCING" | "IMPORTING" => ImageState::Creating,
        other => ImageState::Unusable(other.to_string()),
    }
}

/// Parse one `DescribeImages` image. `ImageType`: PRIVATE_IMAGE (custom, reported as private),
/// PUBLIC_IMAGE, SHARED_IMAGE, MARKET_IMAGE.
pub fn parse_image(v: &Value) -> ImageInfo {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let kind = s("ImageType").unwrap_or_default();
    ImageInfo {
        id: s("ImageId").unwrap_or_default(),
        name: s("ImageName").unwrap_or_default(),
        size_bytes: v.get("ImageSize").and_then(Value::as_u64).map(|g| g * GIB),
        disk_format: None,
        container_format: None,
        visibility: match kind.as_str() {
            "PRIVATE_IMAGE" => "private".into(),
            "PUBLIC_IMAGE" => "public".into(),
            "SHARED_IMAGE" => "shared".into(),
            "MARKET_IMAGE" => "market".into(),
            o => o.to_ascii_lowercase(),
        },
        // The CVM Image model has no encryption field (SDK `Image`): unknown.
        encrypted: None,
        state: s("ImageState").map(|st| image_state(&st)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: kind == "SHARED_IMAGE",
        digest: None,
        checksum: None,
        properties: Default::default(),
        created_at: s("CreatedTime"),
        carried: Default::default(),
    }
}

fn created(v: &Value) -> Option<i64> {
    v.get("CreatedTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

/// A Tencent Cloud API 3.0 service.
pub struct Api3 {
    pub service: &'static str,
    pub version: &'static str,
    pub endpoint: &'static str,
}

pub mod sts;

const CVM_API: Api3 = Api3 {
    service: "cvm",
    version: VERSION,
    endpoint: CVM,
};

/// One signed API 3.0 call (JSON POST) for `region`: credentials `secretId`, `secretKey`,
/// optional `token` from the account; the endpoint override from `acct.endpoint`.
pub async fn api3_call(
    http: &reqwest::Client,
    backoff: &Backoff,
    acct: &Account,
    api: &Api3,
    region: &str,
    action: &str,
    body: Value,
) -> Result<Value, ProviderError> {
    let base = cloud::endpoint(acct.endpoint.as_deref(), api.endpoint, region);
    api3_at(http, backoff, Some(acct), &base, api, region, action, body).await
}

/// One API 3.0 call to `base`, signed with the account's keys (TC3-HMAC-SHA256, the session
/// token in `X-TC-Token`), or unsigned (`Authorization: SKIP`, as the SDK sends STS
/// `AssumeRoleWithWebIdentity`).
#[allow(clippy::too_many_arguments)]
pub async fn api3_at(
    http: &reqwest::Client,
    backoff: &Backoff,
    acct: Option<&Account>,
    base: &str,
    api: &Api3,
    region: &str,
    action: &str,
    body: Value,
) -> Result<Value, ProviderError> {
    let keys = match acct {
        None => None,
        Some(acct) => {
            let (Some(id), Some(key)) = (acct.text("secretId"), acct.text("secretKey")) else {
                return Err(ProviderError::permanent(
                    "the credentials Secret needs secretId and secretKey (and token for temporary credentials)",
                ));
            };
            Some((id, key, acct.text("token")))
        }
    };
    let body = body.to_string();
    backoff
        .run(action, action.starts_with("Describe"), || {
            let (keys, body) = (&keys, &body);
            async move {
                let url = reqwest::Url::parse(&format!("{base}/"))
                    .map_err(|e| ProviderError::permanent(format!("{action}: bad endpoint {base}: {e}")))?;
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let mut rb = http
                    .post(url.clone())
                    .header("Content-Type", "application/json; charset=utf-8")
                    .header("X-TC-Action", action)
                    .header("X-TC-Version", api.version)
                    .header("X-TC-Region", region)
                    .header("X-TC-Timestamp", now.to_string());
                rb = match keys {
                    None => rb.header("Authorization", "SKIP"),
                    Some((id, key, token)) => {
                        let signed_headers = vec![
                            (
                                "Content-Type".to_string(),
                                "application/json; charset=utf-8".to_string(),
                            ),
                            ("Host".to_string(), cloud::host_of(&url)),
                            ("X-TC-Action".to_string(), action.to_ascii_lowercase()),
                        ];
                        let signed = crate::cloud::sign::tencent_tc3(
                            id,
                            key,
                            api.service,
                            &signed_headers,
                            body.as_bytes(),
                            now,
                        );
                        let rb = rb.header("Authorization", signed.authorization);
                        match token {
                            Some(t) => rb.header("X-TC-Token", t.as_str()),
                            None => rb,
                        }
                    }
                };
                let a = cloud::exchange(action, rb.body(body.clone())).await?;
                let (status, text) = (a.status, a.text);
                let v: Value = serde_json::from_str(&text).map_err(|_| {
                    Attempt::from(ProviderError::transient(format!(
                        "{action}: HTTP {status}: {}",
                        cloud::short(&text)
                    )))
                })?;
                let r = v.get("Response").cloned().unwrap_or(Value::Null);
                if let Some(e) = r.get("Error") {
                    let code = e.get("Code").and_then(Value::as_str).unwrap_or("");
                    let msg = e.get("Message").and_then(Value::as_str).unwrap_or("");
                    return Err(error(api.service, action, code, msg));
                }
                if !(200..300).contains(&status) {
                    return Err(ProviderError::transient(format!("{action}: HTTP {status}")).into());
                }
                Ok(r)
            }
        })
        .await
}

impl Tencent {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            backoff,
        }
    }

    async fn call(&self, acct: &Account, region: &str, action: &str, body: Value) -> Result<Value, ProviderError> {
        api3_call(&self.http, &self.backoff, acct, &CVM_API, region, action, body).await
    }

    /// `DescribeImages`, every page (`Limit` at its maximum of 100, `Offset` on until
    /// `TotalCount`): CVM documents no order, so the newest image may be on any page.
    async fn images(&self, acct: &Account, region: &str, query: Value) -> Result<Vec<Value>, ProviderError> {
        cloud::all_pages(PAGE, |read| {
            let mut q = query.clone();
            q["Limit"] = json!(PAGE);
            q["Offset"] = json!(read);
            async move {
                let v = self.call(acct, region, "DescribeImages", q).await?;
                let page = v.get("ImageSet").and_then(Value::as_array).cloned().unwrap_or_default();
                Ok((page, v.get("TotalCount").and_then(Value::as_u64).unwrap_or(0) as usize))
            }
        })
        .await
    }
}

impl Catalog for Tencent {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        self.exchange_keys(how)
    }

    type Image = Value;
    const KIND: ProviderKind = ProviderKind::Tencent;
    const SERVICE: &'static str = "CVM";
    const CAN_CANCEL: bool = false;
    /// SyncImages takes no client token: a copy is found by name.
    const START_IDEMPOTENT: bool = false;
    /// A minute: SyncImages takes no client token, so after a restart that finds no copy none
    /// is asked for within this window (the crash may have come before the call).
    const LISTS_LATE: std::time::Duration = std::time::Duration::from_secs(60);

    async fn lookup(
        &self,
        acct: &Account,
        region: &str,
        selector: &ImageSelector,
    ) -> Result<Vec<Value>, ProviderError> {
        let query = match selector {
            ImageSelector::Id(id) => json!({"ImageIds": [id]}),
            ImageSelector::Name(n) => json!({"Filters": [{"Name": "image-name", "Values": [n]}]}),
        };
        match self.images(acct, region, query).await {
            Err(e) if e.not_found => Ok(Vec::new()),
            r => r,
        }
    }

    async fn own_images(&self, acct: &Account, region: &str, _pattern: &str) -> Result<Vec<Value>, ProviderError> {
        let query = json!({"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]});
        match self.images(acct, region, query).await {
            Err(e) if e.not_found => Ok(Vec::new()),
            r => r,
        }
    }

    async fn image(&self, acct: &Account, region: &str, id: &str) -> Result<Option<Value>, ProviderError> {
        match self.images(acct, region, json!({"ImageIds": [id]})).await {
            Ok(v) => Ok(v
                .into_iter()
                .find(|i| i.get("ImageId").and_then(Value::as_str) == Some(id))),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let Some(since) = req.started_at else { return Ok(None) };
        let found = self
            .images(
                acct,
                &req.region,
                json!({"Filters": [
                    {"Name": "image-name", "Values": [req.name]},
                    {"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}
                ]}),
            )
            .await?;
        let ours: Vec<&Value> = found
            .iter()
            .filter(|i| i.get("ImageName").and_then(Value::as_str) == Some(req.name.as_str()))
            .filter(|i| created(i).is_some_and(|c| c >= since - SKEW_SECONDS))
            .collect();
        Ok(match ours.as_slice() {
            [one] => one.get("ImageId").and_then(Value::as_str).map(CopyHandle::of_image),
            _ => None,
        })
    }

    fn id(image: &Value) -> String {
        json_text(image, "ImageId")
    }

    fn name(image: &Value) -> String {
        json_text(image, "ImageName")
    }

    fn parse(image: &Value) -> ImageInfo {
        parse_image(image)
    }

    fn state(image: &Value) -> (ImageState, Option<i32>) {
        (
            image_state(image.get("ImageState").and_then(Value::as_str).unwrap_or("")),
            image.get("SyncPercent").and_then(Value::as_i64).map(|p| p as i32),
        )
    }

    async fn request_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let mut body = json!({
            "ImageIds": [req.source.id],
            "DestinationRegions": [req.region],
            "ImageName": req.name,
            "ImageSetRequired": true,
        });
        if let Some(k) = &req.kms_key_id {
            body["Encrypt"] = json!(true);
            body["KmsKeyId"] = json!(k);
        }
        // Pre-flight: a refusal (region not supported, image state) comes before any work.
        let mut dry = body.clone();
        dry["DryRun"] = json!(true);
        match self.call(acct, &req.source_region, "SyncImages", dry).await {
            Ok(_) => {}
            Err(e) if e.is("DryRunOperation") => {}
            Err(e) => return Err(e),
        }
        let v = self.call(acct, &req.source_region, "SyncImages", body).await?;
        let id = v
            .get("ImageSet")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("Region").and_then(Value::as_str) == Some(req.region.as_str()))
            .and_then(|i| i.get("ImageId").and_then(Value::as_str))
            .ok_or_else(|| ProviderError::transient("SyncImages: the answer has no image for the destination"))?;
        Ok(CopyHandle::of_image(id))
    }

    async fn cancel(&self, _acct: &Account, _region: &str, _handle: &CopyHandle) -> Result<(), ProviderError> {
        Err(ProviderError::permanent("Tencent CVM cannot cancel an image sync"))
    }

    /// DeleteBindedSnap: the copy's snapshots go with it (deletionPolicy Delete).
    async fn delete(&self, acct: &Account, region: &str, image_id: &str) -> Result<(), ProviderError> {
        let body = json!({"ImageIds": [image_id], "DeleteBindedSnap": true});
        cloud::gone_is_ok(self.call(acct, region, "DeleteImages", body).await)
    }

    /// `DescribeImageSharePermission`: `SharePermissionSet[].AccountId`.
    async fn shared_with(&self, acct: &Account, region: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        let v = self
            .call(acct, region, "DescribeImageSharePermission", json!({"ImageId": id}))
            .await?;
        Ok(v.get("SharePermissionSet")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("AccountId").and_then(Value::as_str).map(String::from))
            .collect())
    }

    /// `ModifyImageSharePermission` SHARE or CANCEL (API 3.0's successor of the old
    /// `ShareImage`).
    async fn set_share(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        let permission = if add { "SHARE" } else { "CANCEL" };
        let body = json!({"ImageId": id, "AccountIds": [account], "Permission": permission});
        match self.call(acct, region, "ModifyImageSharePermission", body).await {
            // Shared with it already: what was asked for is so.
            Err(e) if add && e.is(ACCOUNT_ALREADY_EXISTS) => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

// ---------- the cloud's facts ----------

/// Tencent Cloud's facts (see [`Cloud`]): the registry's one line for it.
pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Tencent,
    service,
    sharing: &SHARING,
    hosts: &["*.tencentcloudapi.com"],
    source_rules,
    default_name: source_name,
    spec_rules,
    free_form_regions: false,
    fields: &[],
    other_owner: Some("this cloud's copies belong to the provider's account; share them with shareWith instead"),
    identity: Some(&sts::IDENTITY),
    moves_bytes: false,
};

/// CVM copies a custom image into an encrypted one only in the source region.
fn spec_rules(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    let src = &spec.source;
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.encryption.is_some() && d.region != src.region {
            out.push(Violation::new(
                format!("spec.destinations[{i}].encryption"),
                "EncryptedSyncOnlyInSourceRegion",
                format!(
                    "Tencent CVM copies a custom image into an encrypted one only in the source region ({}), not {}",
                    src.region, d.region
                ),
            ));
        }
    }
}

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Tencent::default())
}

/// Tencent CVM: the longest destination image name SyncImages accepts.
pub const MAX_NAME: usize = 60;

/// Tencent CVM: custom images only, a shared image only within its own region, destination names within the limit.
pub fn source_rules(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    if matches!(source.visibility.as_str(), "public" | "market") {
        c.refuse(
            src_field.into(),
            "NotCustomImage",
            format!(
                "{img} is a {} image; SyncImages only syncs custom images (create an instance from it, then a custom image)",
                source.visibility
            ),
        );
    }
    if source.visibility == "shared" {
        for (i, d) in spec.destinations.iter().enumerate() {
            if d.region != spec.source.region {
                c.refuse(
                    format!("spec.destinations[{i}].region"),
                    "SharedImageNotSyncable",
                    format!(
                        "{img} is shared with this account; a shared image can only be copied into its own region ({}) as a custom image, then that custom image synced to {}",
                        spec.source.region, d.region
                    ),
                );
            }
        }
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        let n = destination_name(c.cloud, spec, d, source).chars().count();
        if n > MAX_NAME {
            c.refuse(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "the destination image name would be {n} characters; Tencent CVM allows at most {MAX_NAME}, set destinations[{i}].name"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_images_and_errors() {
        let i = parse_image(&json!({"ImageId": "img-1", "ImageName": "web", "ImageState": "SYNCING",
            "ImageType": "SHARED_IMAGE", "ImageSize": 50, "CreatedTime": "2026-11-24T08:00:00Z"}));
        assert_eq!(i.size_bytes, Some(50 * GIB));
        assert_eq!(i.visibility, "shared");
        assert!(i.shared_from_other_account);
        assert_eq!(i.state, Some(ImageState::Creating));
        // The CVM Image model has no encryption field: unknown, even if an answer carried one.
        let e = parse_image(&json!({"ImageId": "img-2", "Encrypt": true}));
        assert_eq!(e.encrypted, None);
        assert_eq!(
            created(&json!({"CreatedTime": "2026-11-24T08:00:00Z"})),
            Some(1795507200)
        );
        assert!(error("cvm", "SyncImages", "RequestLimitExceeded", "slow down").throttled);
        assert!(
            error("cvm", "DescribeImages", "InvalidImageId.NotFound", "x")
                .error
                .not_found
        );
        assert!(
            error("cvm", "SyncImages", "InvalidImageId.IncorrectState", "x")
                .error
                .retryable
        );
        assert!(
            !error("cvm", "SyncImages", "AuthFailure.SignatureFailure", "x")
                .error
                .retryable
        );
        assert!(
            !error("cvm", "SyncImages", "InvalidRegion.Unavailable", "x")
                .error
                .retryable
        );
    }
}
