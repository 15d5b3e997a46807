//! The Alibaba Cloud ECS provider: RPC-style API (`Version=2014-05-26`, JSON) signed with the
//! documented `HMAC-SHA1` signature (optional STS `SecurityToken`).
//!
//! `CopyImage` runs in the source region and returns the destination image id at once; the copy's
//! state and `Progress` come from `DescribeImages` in the destination region (`Creating` ->
//! `Available`). Our idempotency token rides on the copy as a `Tag.N` (`imgrep_client_token`), so
//! a copy whose answer was lost is found by that tag before anything is retried.
//! `CancelCopyImage` stops a pending copy; `DeleteImage` removes a destination image.

use serde_json::Value;

use super::super::catalog::{Catalog, json_text};
use super::super::facts::Sharing;
use super::super::{
    Account, CopyHandle, CopyRequest, ImageInfo, ImageSelector, ImageState, ProviderError, TOKEN_PROPERTY,
};
use std::sync::Arc;

use crate::api::v1alpha1::ImageReplicationSpec;
use crate::api::v1alpha1::ProviderKind;
use crate::api::violation::Violation;
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};
use crate::image_replication::vm::facts::{Check, Cloud, gib, source_name};
use crate::image_replication::vm::rules::destination_name;
use crate::oci::client::urlencode;

/// ECS sharing (`ModifyImageSharePermission`): a custom image with at most 50 Alibaba Cloud
/// accounts (10 per call); no acceptance step.
pub const SHARING: Sharing = Sharing {
    account_rule: "an Alibaba Cloud account id (digits only, e.g. 1234567890123456)",
    valid_account: |a| (5..=20).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()),
    member_limit: 50,
    limit_source: "ECS API reference, ModifyImageSharePermission",
    needs_accept: false,
    // ECS lists are eventually consistent.
    members_lag: 60,
    refuses_encrypted_in_place: false,
};

mod sts;

const ECS: &str = "https://ecs.{region}.aliyuncs.com";
const VERSION: &str = "2014-05-26";
const GIB: u64 = 1 << 30;
/// The largest page of `DescribeImages` and `DescribeImageSharePermission` (`PageSize`).
const PAGE: usize = 100;
/// Every status, so that copies still being made are seen (the API's default is `Available`).
const ALL_STATUS: &str = "Creating,Waiting,Available,UnAvailable,CreateFailed,Deprecated";

/// The Alibaba Cloud ECS provider.
#[derive(Clone)]
pub struct Alibaba {
    http: reqwest::Client,
    backoff: Backoff,
}

impl Default for Alibaba {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

/// Classify an ECS error (`{"Code": ..., "Message": ..., "RequestId": ...}`).
pub(crate) fn error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> Attempt {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v.get("Code").and_then(Value::as_str).unwrap_or("").to_string();
    let msg = v
        .get("Message")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| cloud::short(body));
    let text = format!("{op}: {code}: {msg}");
    cloud::attempt(
        classify(status, &code),
        &code,
        text,
        "check the AccessKey and the RAM policy: ecs:DescribeImages, ecs:CopyImage, ecs:CancelCopyImage, ecs:DeleteImage, ecs:TagResources",
        retry_after,
    )
}

/// The ECS error codes of the operations used (DescribeImages, CopyImage, CancelCopyImage,
/// DeleteImage; the ECS API reference's error lists and the common errors), by exact code or
/// `prefix*`. Not found is exact: `InvalidAccessKeyId.NotFound` is a wrong key, not a gone image.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("Throttling*", ErrorClass::Throttled),
    ("ServiceUnavailable", ErrorClass::Throttled),
    ("InvalidImageId.NotFound", ErrorClass::NotFound),
    ("InvalidImageId.NotExist", ErrorClass::NotFound),
    ("InvalidImage.NotFound", ErrorClass::NotFound),
    ("InvalidImageId.Missing", ErrorClass::Permanent),
    ("QuotaExceed*", ErrorClass::RetryLater),
    ("IncorrectImageStatus", ErrorClass::RetryLater),
    ("IncorrectImageStatus.*", ErrorClass::RetryLater),
    ("InvalidOperation.ImageIsCopying", ErrorClass::RetryLater),
    ("InternalError", ErrorClass::RetryLater),
    ("UnknownError", ErrorClass::RetryLater),
    ("OperationConflict", ErrorClass::RetryLater),
    ("LastTokenProcessing", ErrorClass::RetryLater),
    ("Forbidden*", ErrorClass::Auth),
    ("InvalidAccessKeyId*", ErrorClass::Auth),
    ("InvalidSecurityToken*", ErrorClass::Auth),
    ("SignatureDoesNotMatch", ErrorClass::Auth),
    ("IncompleteSignature", ErrorClass::Auth),
    ("NoPermission", ErrorClass::Auth),
    ("InvalidRegionId*", ErrorClass::Permanent),
    ("InvalidParameter*", ErrorClass::Permanent),
    ("MissingParameter", ErrorClass::Permanent),
    ("IdempotentParameterMismatch", ErrorClass::Permanent),
    ("InvalidImageName.*", ErrorClass::Permanent),
    ("InvalidDescription.*", ErrorClass::Permanent),
    ("InvalidKMSKeyId.*", ErrorClass::Permanent),
    ("InvalidResourceGroup*", ErrorClass::Permanent),
    ("InvalidTagKey.*", ErrorClass::Permanent),
    ("InvalidTagValue.*", ErrorClass::Permanent),
    ("InvalidTag.*", ErrorClass::Permanent),
    ("Tags.*", ErrorClass::Permanent),
    ("DryRunOperation", ErrorClass::Permanent),
    ("OperationDenied*", ErrorClass::Permanent),
];

/// One classification for an ECS error: the code table, then the HTTP status (a 404 with a
/// code the table does not name is not taken for a gone image).
pub fn classify(status: u16, code: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, code).unwrap_or(match status {
        404 if !code.is_empty() => ErrorClass::Permanent,
        s => cloud::by_status(s),
    })
}

fn image_state(status: &str) -> ImageState {
    match status {
        "Available" => ImageState::Available,
        "Creating" | "Waiting" => ImageState::Creating,
        other => ImageState::Unusable(other.to_string()),
    }
}

fn progress(v: &Value) -> Option<i32> {
    v.get("Progress")
        .and_then(Value::as_str)
        .and_then(|p| p.trim_end_matches('%').trim().parse::<i32>().ok())
}

fn tags(v: &Value) -> Vec<(String, String)> {
    v.pointer("/Tags/Tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t.get("TagKey")?.as_str()?.to_string(),
                t.get("TagValue").and_then(Value::as_str).unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Parse one `DescribeImages` image. `ImageOwnerAlias`: self (custom, reported as private),
/// system (public), others (shared with this account), marketplace.
pub fn parse_image(v: &Value) -> ImageInfo {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let owner = s("ImageOwnerAlias").unwrap_or_default();
    let encrypted = v
        .pointer("/DiskDeviceMappings/DiskDeviceMapping")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| {
            d.get("Encrypted")
                .map(|e| e.as_bool() == Some(true) || e.as_str() == Some("true"))
                .unwrap_or(false)
        });
    ImageInfo {
        id: s("ImageId").unwrap_or_default(),
        name: s("ImageName").unwrap_or_default(),
        size_bytes: v.get("Size").and_then(Value::as_u64).map(|g| g * GIB),
        disk_format: None,
        container_format: None,
        visibility: match owner.as_str() {
            "self" => "private".into(),
            "system" => "public".into(),
            "others" => "shared".into(),
            "marketplace" => "market".into(),
            o => o.to_string(),
        },
        encrypted: Some(encrypted),
        state: s("Status").map(|st| image_state(&st)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: owner == "others",
        digest: None,
        checksum: None,
        properties: tags(v).into_iter().filter(|(k, _)| k != TOKEN_PROPERTY).collect(),
        created_at: s("CreationTime"),
        carried: Default::default(),
    }
}

impl Alibaba {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            backoff,
        }
    }

    /// One signed RPC call to the ECS endpoint of `region` (`RegionId` is a parameter the caller
    /// passes).
    async fn call(
        &self,
        acct: &Account,
        region: &str,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let base = cloud::endpoint(acct.endpoint.as_deref(), ECS, region);
        self.rpc(Some(acct), &base, VERSION, action, params, |a| {
            error(action, a.status, &a.text, a.retry_after)
        })
        .await
    }

    /// One RPC call (`GET base/?Action=...`, JSON answers), signed with the account's keys (and
    /// its `SecurityToken`), or unsigned (STS `AssumeRoleWithOIDC`); `refused` reads an error
    /// answer.
    async fn rpc(
        &self,
        acct: Option<&Account>,
        base: &str,
        version: &str,
        action: &str,
        params: &[(&str, String)],
        refused: impl Fn(&cloud::Answer) -> Attempt,
    ) -> Result<Value, ProviderError> {
        let keys = match acct {
            None => None,
            Some(acct) => {
                let (Some(id), Some(secret)) = (acct.text("accessKeyId"), acct.text("accessKeySecret")) else {
                    return Err(ProviderError::permanent(
                        "the credentials Secret needs accessKeyId and accessKeySecret (and securityToken for STS credentials)",
                    ));
                };
                Some((id, secret, acct.text("securityToken")))
            }
        };
        self.backoff
            .run(action, action.starts_with("Describe"), || {
                let keys = &keys;
                let refused = &refused;
                async move {
                    let now = k8s_openapi::jiff::Timestamp::now();
                    let mut q: Vec<(String, String)> = vec![
                        ("Action".into(), action.into()),
                        ("Version".into(), version.into()),
                        ("Format".into(), "JSON".into()),
                        ("Timestamp".into(), crate::cloud::sign::iso_time(now)),
                    ];
                    if let Some((id, _, sts)) = keys {
                        q.extend([
                            ("AccessKeyId".into(), id.clone()),
                            ("SignatureMethod".into(), "HMAC-SHA1".into()),
                            ("SignatureVersion".into(), "1.0".into()),
                            ("SignatureNonce".into(), crate::cloud::sign::nonce()),
                        ]);
                        if let Some(t) = sts {
                            q.push(("SecurityToken".into(), t.clone()));
                        }
                    }
                    q.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
                    if let Some((_, secret, _)) = keys {
                        let sig = crate::cloud::sign::alibaba_rpc(secret, "GET", &q).signature;
                        q.push(("Signature".into(), sig));
                    }
                    let query = q
                        .iter()
                        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                        .collect::<Vec<_>>()
                        .join("&");
                    let a = cloud::exchange(action, self.http.get(format!("{base}/?{query}"))).await?;
                    if a.ok() {
                        serde_json::from_str(&a.text)
                            .map_err(|e| ProviderError::transient(format!("{action}: unreadable answer: {e}")).into())
                    } else {
                        Err(refused(&a))
                    }
                }
            })
            .await
    }

    async fn images(
        &self,
        acct: &Account,
        region: &str,
        filter: &[(&str, String)],
    ) -> Result<Vec<Value>, ProviderError> {
        // Every page (`PageSize` at its maximum of 100, `PageNumber` on until `TotalCount`):
        // ECS documents no order, so the newest image may be on any page.
        cloud::all_pages(PAGE, |read| {
            let mut p: Vec<(&str, String)> = vec![
                ("RegionId", region.to_string()),
                ("Status", ALL_STATUS.to_string()),
                ("PageNumber", (read / PAGE + 1).to_string()),
                ("PageSize", PAGE.to_string()),
            ];
            p.extend(filter.iter().cloned());
            async move {
                let v = self.call(acct, region, "DescribeImages", &p).await?;
                Ok((items_at(&v, "/Images/Image"), total_of(&v)))
            }
        })
        .await
    }
}

/// The items of a page (`Images.Image`, `Accounts.Account`).
fn items_at(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A listing's `TotalCount`.
fn total_of(v: &Value) -> usize {
    v.get("TotalCount").and_then(Value::as_u64).unwrap_or(0) as usize
}

impl Catalog for Alibaba {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        self.exchange_keys(how)
    }

    type Image = Value;
    const KIND: ProviderKind = ProviderKind::Alibaba;
    const SERVICE: &'static str = "ECS";
    const CAN_CANCEL: bool = true;
    /// CopyImage takes a ClientToken.
    const START_IDEMPOTENT: bool = true;

    async fn lookup(
        &self,
        acct: &Account,
        region: &str,
        selector: &ImageSelector,
    ) -> Result<Vec<Value>, ProviderError> {
        let (k, v) = match selector {
            ImageSelector::Id(id) => ("ImageId", id),
            ImageSelector::Name(n) => ("ImageName", n),
        };
        self.images(acct, region, &[(k, v.clone())]).await
    }

    async fn own_images(&self, acct: &Account, region: &str, _pattern: &str) -> Result<Vec<Value>, ProviderError> {
        self.images(acct, region, &[("ImageOwnerAlias", "self".to_string())])
            .await
    }

    async fn image(&self, acct: &Account, region: &str, id: &str) -> Result<Option<Value>, ProviderError> {
        Ok(self
            .images(acct, region, &[("ImageId", id.to_string())])
            .await?
            .into_iter()
            .find(|i| i.get("ImageId").and_then(Value::as_str) == Some(id)))
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
            image_state(image.get("Status").and_then(Value::as_str).unwrap_or("")),
            progress(image),
        )
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let found = self
            .images(
                acct,
                &req.region,
                &[
                    ("Tag.1.Key", TOKEN_PROPERTY.to_string()),
                    ("Tag.1.Value", req.token.clone()),
                ],
            )
            .await?;
        Ok(found
            .into_iter()
            .find(|i| tags(i).iter().any(|(k, v)| k == TOKEN_PROPERTY && *v == req.token))
            .and_then(|i| i.get("ImageId").and_then(Value::as_str).map(String::from))
            .map(CopyHandle::of_image))
    }

    async fn request_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        // ClientToken: a retried request after a crash or a lost answer returns the same
        // copy (the token is ASCII and at most 64 characters, as the API requires).
        let mut p: Vec<(&str, String)> = vec![
            ("RegionId", req.source_region.clone()),
            ("ClientToken", req.token.clone()),
            ("ImageId", req.source.id.clone()),
            ("DestinationRegionId", req.region.clone()),
            ("DestinationImageName", req.name.clone()),
        ];
        if let Some(d) = &req.description {
            p.push(("DestinationDescription", d.clone()));
        }
        if let Some(k) = &req.kms_key_id {
            p.push(("Encrypted", "true".into()));
            p.push(("KMSKeyId", k.clone()));
        }
        if let Some(g) = &req.resource_group_id {
            p.push(("ResourceGroupId", g.clone()));
        }
        let mut all: Vec<(String, String)> = req.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.push((TOKEN_PROPERTY.into(), req.token.clone()));
        let keys: Vec<(String, String, String, String)> = all
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("Tag.{}.Key", i + 1), k, format!("Tag.{}.Value", i + 1), v))
            .collect();
        for (kk, k, vk, v) in &keys {
            p.push((kk.as_str(), k.clone()));
            p.push((vk.as_str(), v.clone()));
        }
        let v = self.call(acct, &req.source_region, "CopyImage", &p).await?;
        let id = v
            .get("ImageId")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::transient("CopyImage: the answer has no ImageId"))?;
        Ok(CopyHandle::of_image(id))
    }

    async fn cancel(&self, acct: &Account, region: &str, handle: &CopyHandle) -> Result<(), ProviderError> {
        let Some(id) = &handle.image_id else { return Ok(()) };
        let r = self
            .call(
                acct,
                region,
                "CancelCopyImage",
                &[("RegionId", region.to_string()), ("ImageId", id.clone())],
            )
            .await;
        match r {
            // Finished meanwhile: a cancelled copy leaves no image, so it goes too.
            Err(e) if e.code.as_deref().is_some_and(|c| c.starts_with("IncorrectImageStatus")) => {
                self.delete(acct, region, id).await
            }
            r => cloud::gone_is_ok(r),
        }
    }

    /// `DescribeImageSharePermission`: `Accounts.Account[].AliyunId`, page by page.
    async fn shared_with(&self, acct: &Account, region: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        let accounts = cloud::all_pages(PAGE, |read| async move {
            let p = [
                ("RegionId", region.to_string()),
                ("ImageId", id.to_string()),
                ("PageNumber", (read / PAGE + 1).to_string()),
                ("PageSize", PAGE.to_string()),
            ];
            let v = self.call(acct, region, "DescribeImageSharePermission", &p).await?;
            Ok((items_at(&v, "/Accounts/Account"), total_of(&v)))
        })
        .await?;
        Ok(accounts
            .iter()
            .filter_map(|a| a.get("AliyunId").and_then(Value::as_str).map(String::from))
            .collect())
    }

    /// `ModifyImageSharePermission` with `AddAccount.1` or `RemoveAccount.1`.
    async fn set_share(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        let key = if add { "AddAccount.1" } else { "RemoveAccount.1" };
        self.call(
            acct,
            region,
            "ModifyImageSharePermission",
            &[
                ("RegionId", region.to_string()),
                ("ImageId", id.to_string()),
                (key, account.to_string()),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, acct: &Account, region: &str, image_id: &str) -> Result<(), ProviderError> {
        cloud::gone_is_ok(
            self.call(
                acct,
                region,
                "DeleteImage",
                &[("RegionId", region.to_string()), ("ImageId", image_id.to_string())],
            )
            .await,
        )
    }
}

// ---------- the cloud's facts ----------

/// Alibaba Cloud's facts (see [`Cloud`]): the registry's one line for it.
pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Alibaba,
    service,
    sharing: &SHARING,
    hosts: &["*.aliyuncs.com"],
    source_rules,
    default_name: source_name,
    spec_rules,
    free_form_regions: false,
    fields: &["resourceGroupId"],
    other_owner: Some(
        "ECS cannot copy an image shared by another account to another region (the seed: create a custom image from it first, then copy that); share the copy with shareWith instead",
    ),
    identity: Some(&sts::IDENTITY),
    moves_bytes: false,
};

/// Tags an ECS CopyImage request may carry (`Tag.N`, N <= 20).
pub const MAX_TAGS: usize = 20;

/// ECS CopyImage takes Tag.1..Tag.20, and one of them carries the operator's idempotency token.
fn spec_rules(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.tags.len() > MAX_TAGS - 1 {
            out.push(Violation::new(
                format!("spec.destinations[{i}].tags"),
                "TooManyTags",
                format!(
                    "Alibaba CopyImage takes at most {MAX_TAGS} tags and the operator uses one for its idempotency token; this destination has {}, at most {} are allowed",
                    d.tags.len(),
                    MAX_TAGS - 1
                ),
            ));
        }
    }
}

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Alibaba::default())
}

/// Alibaba ECS: images over 2 TiB must go through snapshot copy.
pub const MAX_BYTES: u64 = 2 * 1024 * GIB;

/// Alibaba ECS: no images shared by another account, at most 2 TiB, destination names of 2 to 128 characters.
pub fn source_rules(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    let copies = spec
        .destinations
        .iter()
        .any(|d| !d.shares_in_place(&spec.source.region));
    if source.shared_from_other_account && copies {
        c.refuse(
            src_field.into(),
            "SharedImageNotCopyable",
            format!("{img} is shared by another account; create a custom image from it first, then copy that"),
        );
    }
    if size > MAX_BYTES {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; images over 2 TiB must be copied as snapshots and the image created from the snapshot copy in the destination region, which this version does not do",
                gib(size)
            ),
        );
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        let n = destination_name(c.cloud, spec, d, source).chars().count();
        if !(2..=128).contains(&n) {
            c.refuse(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "the destination name would be {n} characters (from the source name); it must be 2 to 128, set destinations[{i}].name"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_images_and_errors() {
        let i = parse_image(&json!({
            "ImageId": "m-1", "ImageName": "web", "Status": "Creating", "Progress": "40%", "Size": 40,
            "ImageOwnerAlias": "others",
            "DiskDeviceMappings": {"DiskDeviceMapping": [{"Encrypted": "true"}]},
            "Tags": {"Tag": [{"TagKey": "team", "TagValue": "web"}, {"TagKey": TOKEN_PROPERTY, "TagValue": "t"}]}
        }));
        assert_eq!(i.size_bytes, Some(40 * GIB));
        assert!(i.shared_from_other_account && i.encrypted == Some(true));
        assert_eq!(i.visibility, "shared");
        assert_eq!(i.state, Some(ImageState::Creating));
        assert_eq!(i.properties.len(), 1);
        assert_eq!(progress(&json!({"Progress": "40%"})), Some(40));

        let a = error(
            "CopyImage",
            400,
            r#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#,
            None,
        );
        assert!(a.throttled && a.error.retryable);
        let a = error(
            "CopyImage",
            404,
            r#"{"Code":"InvalidImageId.NotFound","Message":"x"}"#,
            None,
        );
        assert!(a.error.not_found);
        let a = error(
            "CopyImage",
            403,
            r#"{"Code":"Forbidden.RAM","Message":"User not authorized"}"#,
            None,
        );
        assert!(!a.error.retryable && a.error.message.contains("ecs:CopyImage"));
        let a = error(
            "CopyImage",
            400,
            r#"{"Code":"QuotaExceed.Image","Message":"quota"}"#,
            None,
        );
        assert!(a.error.retryable && !a.throttled);
    }
}
