//! The AWS EC2 provider: the EC2 Query API (`Version=2016-11-15`, form-encoded POST, XML answers)
//! signed with Signature Version 4 (optional session token).
//!
//! `CopyImage` runs in the destination region with `SourceRegion`, our token as `ClientToken`
//! (EC2's own idempotency) and as an `imgrep_client_token` tag, so a copy whose answer was lost
//! is found again before anything is retried. The copy's state comes from `DescribeImages`
//! (`pending` -> `available`). A pending copy is cancelled, and a copied image deleted, by
//! `DeregisterImage`; deleting also removes the copy's EBS snapshots.

use super::super::catalog::Catalog;
use super::super::facts::Sharing;
use super::super::{
    Account, CopyHandle, CopyRequest, ImageInfo, ImageSelector, ImageState, ProviderError, TOKEN_PROPERTY,
};
use std::sync::Arc;

use crate::api::v1alpha1::ProviderKind;
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::xml::{self, Node};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};
use crate::image_replication::vm::facts::{Cloud, no_rules, no_spec_rules, source_name};
use crate::oci::client::urlencode;

/// EC2 sharing (`ModifyImageAttribute` launchPermission, with `ModifySnapshotAttribute`
/// createVolumePermission on the AMI's snapshots so the account can copy it): 12-digit account
/// ids, no acceptance step; at most 1,000 accounts per AMI (EC2 service quota "AMI sharing").
pub const SHARING: Sharing = Sharing {
    account_rule: "a 12-digit AWS account id",
    valid_account: |a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()),
    member_limit: 1000,
    limit_source: "EC2 service quotas, AMI sharing",
    needs_accept: false,
    // EC2 is eventually consistent (its API reference).
    members_lag: 60,
    refuses_encrypted_in_place: true,
};

mod sts;

const EC2: &str = "https://ec2.{region}.amazonaws.com";
const VERSION: &str = "2016-11-15";
const GIB: u64 = 1 << 30;

/// The AWS EC2 provider.
#[derive(Clone)]
pub struct Aws {
    http: reqwest::Client,
    /// EKS Pod Identity's agent (a link-local address the pod's environment names).
    agent: reqwest::Client,
    backoff: Backoff,
}

impl Default for Aws {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

/// Classify an EC2 error (`<Response><Errors><Error><Code>`).
pub(crate) fn error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> Attempt {
    let doc = xml::parse(body).ok();
    let code = doc
        .as_ref()
        .and_then(|d| d.find("Code"))
        .map(|n| n.text.trim().to_string())
        .unwrap_or_default();
    let msg = doc
        .as_ref()
        .and_then(|d| d.find("Message"))
        .map(|n| n.text.trim().to_string())
        .unwrap_or_else(|| cloud::short(body));
    let text = format!("{op}: {code}: {msg}");
    cloud::attempt(
        classify(status, &code),
        &code,
        text,
        "check the keys and the IAM policy: ec2:DescribeImages, ec2:CopyImage, ec2:CreateTags, ec2:DeregisterImage, ec2:DeleteSnapshot",
        retry_after,
    )
}

/// The EC2 error codes of the operations used (EC2 API reference, "Error codes"), and every
/// throttling code botocore retries as throttling (`EC2ThrottledException` among them).
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("RequestLimitExceeded", ErrorClass::Throttled),
    ("EC2ThrottledException", ErrorClass::Throttled),
    ("Throttling", ErrorClass::Throttled),
    ("ThrottlingException", ErrorClass::Throttled),
    ("ThrottledException", ErrorClass::Throttled),
    ("RequestThrottled", ErrorClass::Throttled),
    ("RequestThrottledException", ErrorClass::Throttled),
    ("TooManyRequestsException", ErrorClass::Throttled),
    ("SlowDown", ErrorClass::Throttled),
    ("BandwidthLimitExceeded", ErrorClass::Throttled),
    ("LimitExceededException", ErrorClass::Throttled),
    ("PriorRequestNotComplete", ErrorClass::Throttled),
    ("TransactionInProgressException", ErrorClass::Throttled),
    ("ProvisionedThroughputExceededException", ErrorClass::Throttled),
    ("InvalidAMIID.NotFound", ErrorClass::NotFound),
    ("InvalidAMIID.Unavailable", ErrorClass::NotFound),
    ("InvalidSnapshot.NotFound", ErrorClass::NotFound),
    ("InvalidAMIID.Malformed", ErrorClass::Permanent),
    ("InvalidSnapshotID.Malformed", ErrorClass::Permanent),
    ("ResourceLimitExceeded", ErrorClass::RetryLater),
    ("IncorrectState", ErrorClass::RetryLater),
    ("InvalidSnapshot.InUse", ErrorClass::RetryLater),
    ("InternalError", ErrorClass::RetryLater),
    ("InternalFailure", ErrorClass::RetryLater),
    ("ServiceUnavailable", ErrorClass::RetryLater),
    ("Unavailable", ErrorClass::RetryLater),
    ("UnauthorizedOperation", ErrorClass::Auth),
    ("AuthFailure", ErrorClass::Auth),
    ("SignatureDoesNotMatch", ErrorClass::Auth),
    ("InvalidClientTokenId", ErrorClass::Auth),
    ("OptInRequired", ErrorClass::Auth),
    ("Blocked", ErrorClass::Auth),
    ("IdempotentParameterMismatch", ErrorClass::Permanent),
    ("InvalidParameter*", ErrorClass::Permanent),
    ("MissingParameter", ErrorClass::Permanent),
    ("InvalidRegion", ErrorClass::Permanent),
    ("InvalidAction", ErrorClass::Permanent),
    ("DryRunOperation", ErrorClass::Permanent),
];

/// One classification for an EC2 error: the code table, then the HTTP status.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, code).unwrap_or_else(|| cloud::by_status(status))
}

fn image_state(state: &str) -> ImageState {
    match state {
        "available" => ImageState::Available,
        "pending" | "transient" => ImageState::Creating,
        other => ImageState::Unusable(other.to_string()),
    }
}

fn tags(item: &Node) -> Vec<(String, String)> {
    item.child("tagSet")
        .into_iter()
        .flat_map(|t| t.all("item"))
        .filter_map(|t| Some((t.text_at("key")?, t.text_at("value").unwrap_or_default())))
        .collect()
}

fn snapshots(item: &Node) -> Vec<String> {
    item.child("blockDeviceMapping")
        .into_iter()
        .flat_map(|b| b.all("item"))
        .filter_map(|b| b.text_at("ebs/snapshotId"))
        .collect()
}

/// The `userId`s of a `Describe{Image,Snapshot}Attribute` answer's permission list.
fn user_ids(doc: &Node, list: &str) -> Vec<String> {
    doc.child(list)
        .into_iter()
        .flat_map(|l| l.all("item"))
        .filter_map(|i| i.text_at("userId"))
        .collect()
}

/// Parse one `DescribeImages` item.
pub fn parse_image(item: &Node) -> ImageInfo {
    let volumes: Vec<&Node> = item
        .child("blockDeviceMapping")
        .into_iter()
        .flat_map(|b| b.all("item"))
        .filter_map(|b| b.child("ebs"))
        .collect();
    let size: u64 = volumes
        .iter()
        .filter_map(|e| e.text_at("volumeSize")?.parse::<u64>().ok())
        .sum();
    ImageInfo {
        id: item.text_at("imageId").unwrap_or_default(),
        name: item.text_at("name").unwrap_or_default(),
        size_bytes: (size > 0).then_some(size * GIB),
        disk_format: None,
        container_format: None,
        visibility: if item.text_at("isPublic").as_deref() == Some("true") {
            "public".into()
        } else {
            "private".into()
        },
        encrypted: Some(
            volumes
                .iter()
                .any(|e| e.text_at("encrypted").as_deref() == Some("true")),
        ),
        state: item.text_at("imageState").map(|s| image_state(&s)),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: false,
        digest: None,
        checksum: None,
        properties: tags(item).into_iter().filter(|(k, _)| k != TOKEN_PROPERTY).collect(),
        created_at: item.text_at("creationDate"),
        carried: Default::default(),
    }
}

impl Aws {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            agent: cloud::agent_client(),
            backoff,
        }
    }

    /// One signed Query API call to the EC2 endpoint of `region`.
    async fn call(
        &self,
        acct: &Account,
        region: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Node, ProviderError> {
        let base = cloud::endpoint(acct.endpoint.as_deref(), EC2, region);
        let mut form: Vec<(String, String)> =
            vec![("Action".into(), action.into()), ("Version".into(), VERSION.into())];
        form.extend(params.iter().cloned());
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.backoff
            .run(action, action.starts_with("Describe"), || {
                let (base, body) = (&base, &body);
                async move {
                    let url = reqwest::Url::parse(&format!("{base}/"))
                        .map_err(|e| ProviderError::permanent(format!("{action}: bad endpoint {base}: {e}")))?;
                    let rb = self.signed(acct, region, "ec2", &url, body)?;
                    let a = cloud::exchange(action, rb.body(body.clone())).await?;
                    if a.ok() {
                        xml::parse(&a.text)
                            .map_err(|e| ProviderError::transient(format!("{action}: unreadable answer: {e}")).into())
                    } else {
                        Err(error(action, a.status, &a.text, a.retry_after))
                    }
                }
            })
            .await
    }

    /// A form POST to `url`, signed with Signature Version 4 for `service` in `region` with the
    /// account's keys (and its session token, signed too).
    fn signed(
        &self,
        acct: &Account,
        region: &str,
        service: &str,
        url: &reqwest::Url,
        body: &str,
    ) -> Result<reqwest::RequestBuilder, Attempt> {
        let (Some(ak), Some(sk)) = (acct.text("accessKeyId"), acct.text("secretAccessKey")) else {
            return Err(ProviderError::permanent(
                "the credentials Secret needs accessKeyId and secretAccessKey (and sessionToken for temporary credentials)",
            )
            .into());
        };
        let date = crate::cloud::sign::compact_time(k8s_openapi::jiff::Timestamp::now());
        let mut headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), cloud::host_of(url)),
            ("X-Amz-Date".to_string(), date.clone()),
        ];
        if let Some(t) = acct.text("sessionToken") {
            headers.push(("X-Amz-Security-Token".into(), t));
        }
        let signed = crate::cloud::sign::aws_v4(
            &ak,
            &sk,
            region,
            service,
            "POST",
            url.path(),
            &[],
            &headers,
            body.as_bytes(),
            &date,
        );
        let mut rb = self.http.post(url.clone());
        for (k, v) in &headers {
            if k != "Host" {
                rb = rb.header(k.as_str(), v.as_str());
            }
        }
        Ok(rb.header("Authorization", signed.authorization))
    }

    async fn images(
        &self,
        acct: &Account,
        region: &str,
        params: &[(String, String)],
    ) -> Result<Vec<Node>, ProviderError> {
        let doc = self.call(acct, region, "DescribeImages", params).await?;
        Ok(doc
            .child("imagesSet")
            .map(|s| s.all("item").cloned().collect())
            .unwrap_or_default())
    }

    fn tag_params(req: &CopyRequest, prefix: &str) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = req.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.push((TOKEN_PROPERTY.into(), req.token.clone()));
        all.into_iter()
            .enumerate()
            .flat_map(|(i, (k, v))| {
                [
                    (format!("{prefix}Tag.{}.Key", i + 1), k),
                    (format!("{prefix}Tag.{}.Value", i + 1), v),
                ]
            })
            .collect()
    }
}

impl Catalog for Aws {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        self.exchange_keys(how)
    }

    type Image = Node;
    const KIND: ProviderKind = ProviderKind::Aws;
    const SERVICE: &'static str = "EC2";
    const CAN_CANCEL: bool = true;
    /// CopyImage takes a ClientToken.
    const START_IDEMPOTENT: bool = true;
    // A launch permission or snapshot permission withdrawn twice is no error, and an AMI with
    // only one of them (a share made by hand) must lose both.
    const UNSHARE_IS_IDEMPOTENT: bool = true;

    async fn lookup(&self, acct: &Account, region: &str, selector: &ImageSelector) -> Result<Vec<Node>, ProviderError> {
        let params: Vec<(String, String)> = match selector {
            ImageSelector::Id(id) => vec![("ImageId.1".into(), id.clone())],
            ImageSelector::Name(n) => vec![
                ("Filter.1.Name".into(), "name".into()),
                ("Filter.1.Value.1".into(), n.clone()),
            ],
        };
        self.images(acct, region, &params).await
    }

    /// EC2's `name` filter takes the same wildcards (`*`, `?`) as `source.imageName`.
    async fn own_images(&self, acct: &Account, region: &str, pattern: &str) -> Result<Vec<Node>, ProviderError> {
        let params: Vec<(String, String)> = vec![
            ("Owner.1".into(), "self".into()),
            ("Filter.1.Name".into(), "name".into()),
            ("Filter.1.Value.1".into(), pattern.to_string()),
        ];
        self.images(acct, region, &params).await
    }

    async fn image(&self, acct: &Account, region: &str, id: &str) -> Result<Option<Node>, ProviderError> {
        match self.images(acct, region, &[("ImageId.1".into(), id.into())]).await {
            Ok(v) => Ok(v.into_iter().find(|i| i.text_at("imageId").as_deref() == Some(id))),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let found = self
            .images(
                acct,
                &req.region,
                &[
                    ("Owner.1".into(), "self".into()),
                    ("Filter.1.Name".into(), format!("tag:{TOKEN_PROPERTY}")),
                    ("Filter.1.Value.1".into(), req.token.clone()),
                ],
            )
            .await?;
        Ok(found
            .iter()
            .find(|i| tags(i).iter().any(|(k, v)| k == TOKEN_PROPERTY && *v == req.token))
            .and_then(|i| i.text_at("imageId"))
            .map(CopyHandle::of_image))
    }

    fn id(image: &Node) -> String {
        image.text_at("imageId").unwrap_or_default()
    }

    fn name(image: &Node) -> String {
        image.text_at("name").unwrap_or_default()
    }

    fn parse(image: &Node) -> ImageInfo {
        parse_image(image)
    }

    fn state(image: &Node) -> (ImageState, Option<i32>) {
        let state = match image_state(&image.text_at("imageState").unwrap_or_default()) {
            ImageState::Unusable(s) => ImageState::Unusable(format!(
                "{s}: {}",
                image.text_at("stateReason/message").unwrap_or_default()
            )),
            st => st,
        };
        (state, None)
    }

    async fn request_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let mut p: Vec<(String, String)> = vec![
            ("SourceImageId".into(), req.source.id.clone()),
            ("SourceRegion".into(), req.source_region.clone()),
            ("Name".into(), req.name.clone()),
            ("ClientToken".into(), req.token.clone()),
        ];
        if let Some(d) = &req.description {
            p.push(("Description".into(), d.clone()));
        }
        if let Some(k) = &req.kms_key_id {
            p.push(("Encrypted".into(), "true".into()));
            p.push(("KmsKeyId".into(), k.clone()));
        }
        p.push(("TagSpecification.1.ResourceType".into(), "image".into()));
        p.extend(Self::tag_params(req, "TagSpecification.1."));
        let doc = self.call(acct, &req.region, "CopyImage", &p).await?;
        let id = doc
            .text_at("imageId")
            .ok_or_else(|| ProviderError::transient("CopyImage: the answer has no imageId"))?;
        Ok(CopyHandle::of_image(id))
    }

    /// TagSpecification tags the copy at creation; make sure (some EC2-compatible endpoints
    /// ignore it) before reporting success.
    async fn settle(&self, acct: &Account, req: &CopyRequest, image: &Node) -> Result<(), ProviderError> {
        if !tags(image).iter().any(|(k, v)| k == TOKEN_PROPERTY && *v == req.token) {
            let mut p: Vec<(String, String)> = vec![("ResourceId.1".into(), Self::id(image))];
            p.extend(Self::tag_params(req, ""));
            self.call(acct, &req.region, "CreateTags", &p).await?;
        }
        Ok(())
    }

    /// A pending copy is cancelled by deregistering it.
    async fn cancel(&self, acct: &Account, region: &str, handle: &CopyHandle) -> Result<(), ProviderError> {
        match &handle.image_id {
            Some(id) => self.delete(acct, region, id).await,
            None => Ok(()),
        }
    }

    /// The accounts that may launch the AMI (`DescribeImageAttribute launchPermission`) and
    /// may create volumes from every one of its snapshots (`DescribeSnapshotAttribute
    /// createVolumePermission`): without the second, the account can launch but not copy it, so
    /// an account missing it is not counted as shared (and is shared again, both).
    async fn shared_with(&self, acct: &Account, region: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        let img = self
            .image(acct, region, id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("AMI {id} in {region} is gone")))?;
        let doc = self
            .call(
                acct,
                region,
                "DescribeImageAttribute",
                &[
                    ("ImageId".into(), id.into()),
                    ("Attribute".into(), "launchPermission".into()),
                ],
            )
            .await?;
        let mut accounts = user_ids(&doc, "launchPermission");
        for snap in snapshots(&img) {
            let doc = self
                .call(
                    acct,
                    region,
                    "DescribeSnapshotAttribute",
                    &[
                        ("SnapshotId".into(), snap),
                        ("Attribute".into(), "createVolumePermission".into()),
                    ],
                )
                .await?;
            let can = user_ids(&doc, "createVolumePermission");
            accounts.retain(|a| can.contains(a));
        }
        Ok(accounts)
    }

    /// `ModifyImageAttribute` launchPermission and `ModifySnapshotAttribute`
    /// createVolumePermission on each of the AMI's snapshots (the step users forget: without it
    /// the account cannot copy the AMI), added or removed.
    async fn set_share(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        let img = self
            .image(acct, region, id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("AMI {id} in {region} is gone")))?;
        let op = if add { "Add" } else { "Remove" };
        self.call(
            acct,
            region,
            "ModifyImageAttribute",
            &[
                ("ImageId".into(), id.into()),
                (format!("LaunchPermission.{op}.1.UserId"), account.into()),
            ],
        )
        .await?;
        for snap in snapshots(&img) {
            self.call(
                acct,
                region,
                "ModifySnapshotAttribute",
                &[
                    ("SnapshotId".into(), snap),
                    ("Attribute".into(), "createVolumePermission".into()),
                    ("OperationType".into(), op.to_ascii_lowercase()),
                    ("UserId.1".into(), account.into()),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, acct: &Account, region: &str, image_id: &str) -> Result<(), ProviderError> {
        let snaps = match self.image(acct, region, image_id).await? {
            Some(img) => snapshots(&img),
            None => return Ok(()),
        };
        cloud::gone_is_ok(
            self.call(acct, region, "DeregisterImage", &[("ImageId".into(), image_id.into())])
                .await,
        )?;
        for s in snaps {
            cloud::gone_is_ok(
                self.call(acct, region, "DeleteSnapshot", &[("SnapshotId".into(), s)])
                    .await,
            )?;
        }
        Ok(())
    }
}

// ---------- the cloud's facts ----------

/// AWS's facts (see [`Cloud`]): the registry's one line for it.
pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Aws,
    service,
    sharing: &SHARING,
    hosts: &["*.amazonaws.com", "*.amazonaws.com.cn"],
    source_rules: no_rules,
    default_name: source_name,
    spec_rules: no_spec_rules,
    free_form_regions: false,
    fields: &[],
    other_owner: None,
    identity: Some(&sts::IDENTITY),
    moves_bytes: false,
};

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Aws::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_images_and_errors() {
        let doc = xml::parse(
            "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId><name>web</name>\
             <imageState>pending</imageState><isPublic>false</isPublic>\
             <blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId><volumeSize>8</volumeSize>\
             <encrypted>true</encrypted></ebs></item></blockDeviceMapping>\
             <tagSet><item><key>team</key><value>web</value></item></tagSet></item></imagesSet></DescribeImagesResponse>",
        )
        .unwrap();
        let item = doc.child("imagesSet").unwrap().child("item").unwrap();
        let i = parse_image(item);
        assert_eq!(i.size_bytes, Some(8 * GIB));
        assert_eq!(i.encrypted, Some(true));
        assert_eq!(i.state, Some(ImageState::Creating));
        assert_eq!(i.properties.get("team").map(String::as_str), Some("web"));
        assert_eq!(snapshots(item), vec!["snap-1"]);

        let e = |code: &str| {
            error(
                "CopyImage",
                400,
                &format!(
                    "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors></Response>"
                ),
                None,
            )
        };
        assert!(e("RequestLimitExceeded").throttled);
        assert!(e("InvalidAMIID.NotFound").error.not_found);
        assert!(!e("UnauthorizedOperation").error.retryable);
        assert!(e("ResourceLimitExceeded").error.retryable);
    }
}
