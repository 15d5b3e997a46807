//! The Azure Compute Gallery provider: Azure Resource Manager (`Microsoft.Compute`,
//! api-version [`API_VERSION`]) with an Entra ID token ([`entra`]).
//!
//! An image version (`.../galleries/{g}/images/{definition}/versions/{x.y.z}`) is replicated by
//! Azure itself to the regions of its `publishingProfile.targetRegions`: a copy "in region R" is
//! R added to that list (`PATCH`, a long-running update), its progress the version's
//! `replicationStatus.summary` entry for R (`Replicating` with `progress`, then `Completed` or
//! `Failed`), read with `$expand=ReplicationStatus`. The copy is the same resource in another
//! region, so its id is the version's id; deleting the copy removes R from the list (never the
//! version, never its home region). Adding a region the list has already is a no-op, so a start
//! is idempotent and a copy whose answer was lost is found in the list. `source.follow` lists the
//! definition's versions (`nextLink` pages) and takes the newest published one not
//! `excludeFromLatest`; `imageName` names versions as `<gallery>/<definition>/<version>` in the
//! Secret's `resourceGroup`.
//!
//! A share is Azure RBAC on the version: the built-in Reader role assigned to an Entra ID
//! principal (`user:`, `group:` or `servicePrincipal:` and its object id) at the version's scope
//! (`Microsoft.Authorization/roleAssignments`, api-version [`AUTH_API_VERSION`]), with a name
//! derived from the version and the principal (a repeated share is the same assignment). As the
//! copy in every region is the version, its shares are the same in every region.

pub mod entra;
pub mod wi;

use std::sync::Arc;

use serde_json::{Value, json};

use super::super::catalog::Catalog;
use super::super::facts::{Cloud, Sharing, no_rules};
use super::super::{Account, CopyHandle, CopyRequest, ImageInfo, ImageSelector, ImageState, ProviderError};
use crate::api::v1alpha1::{ImageReplicationSpec, ProviderKind};
use crate::api::violation::Violation;
use crate::cloud::bearer::{self, JsonCall};
use crate::cloud::identity::{Exchange, Temporary};
use crate::cloud::{self, Attempt, Backoff, ErrorClass};

/// The ARM api-version of `Microsoft.Compute` galleries (azure-mgmt-compute's default).
pub const API_VERSION: &str = "2026-03-03";
/// Azure Resource Manager; `provider.endpoint` replaces it.
const ARM: &str = "https://management.azure.com";
/// Regions one image version can be replicated to (Azure's documented limit per version).
pub const MAX_REGIONS: usize = 100;
/// The storage account types of a version's replicas (azure-mgmt-compute's `StorageAccountType`).
pub const STORAGE_TYPES: &[&str] = &["Standard_LRS", "Standard_ZRS", "Premium_LRS", "PremiumV2_LRS"];

/// The `Microsoft.Authorization` api-version of role assignments (azure-mgmt-authorization's).
pub const AUTH_API_VERSION: &str = "2022-04-01";
/// Azure's built-in Reader role: with it on an image version, a principal creates VMs from it.
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
/// How a share names a principal (`user:`...) and ARM's `principalType`.
const PRINCIPAL_TYPES: &[(&str, &str)] = &[
    ("user", "User"),
    ("group", "Group"),
    ("servicePrincipal", "ServicePrincipal"),
];

/// A share is the Reader role on the version for an Entra ID principal.
pub const SHARING: Sharing = Sharing {
    account_rule: "an Entra ID principal as user:OBJECT-ID, group:OBJECT-ID or servicePrincipal:OBJECT-ID (the object id in lower case)",
    valid_account: valid_principal,
    member_limit: 4000,
    limit_source: "Azure RBAC: role assignments per subscription",
    needs_accept: false,
    // ARM lists a new role assignment within seconds; its effect may take minutes.
    members_lag: 30,
    refuses_encrypted_in_place: false,
};

fn valid_principal(a: &str) -> bool {
    a.split_once(':')
        .is_some_and(|(t, id)| PRINCIPAL_TYPES.iter().any(|(p, _)| *p == t) && is_guid(id))
}

/// A GUID in lower case (`8-4-4-4-12` hex digits), as ARM lists object ids.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
}

/// ARM error codes (`error.code`) by class; others by HTTP status.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("TooManyRequests", ErrorClass::Throttled),
    ("ResourceNotFound", ErrorClass::NotFound),
    ("NotFound", ErrorClass::NotFound),
    ("ParentResourceNotFound", ErrorClass::NotFound),
    // Another update of the version is under way: tried again later.
    ("OperationNotAllowed", ErrorClass::RetryLater),
    ("Conflict", ErrorClass::RetryLater),
    ("InternalServerError", ErrorClass::RetryLater),
    ("ServiceUnavailable", ErrorClass::RetryLater),
    ("AuthorizationFailed", ErrorClass::Auth),
    ("InvalidAuthenticationToken", ErrorClass::Auth),
    ("ExpiredAuthenticationToken", ErrorClass::Auth),
    ("InvalidParameter", ErrorClass::Permanent),
    // The principal holds Reader on the version already under another name: shared.
    ("RoleAssignmentExists", ErrorClass::Permanent),
    ("PrincipalNotFound", ErrorClass::Permanent),
    ("UnmatchedPrincipalType", ErrorClass::Permanent),
    ("BadRequest", ErrorClass::Permanent),
];

pub fn classify(status: u16, code: &str) -> ErrorClass {
    cloud::lookup(ERROR_CODES, code).unwrap_or_else(|| cloud::by_status(status))
}

fn error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> Attempt {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(cloud::short)
        .unwrap_or_else(|| cloud::short(body));
    cloud::attempt(
        classify(status, code),
        code,
        format!("{op}: HTTP {status} {code}: {message}"),
        "check the app registration's secret and that its role on the gallery allows Microsoft.Compute/galleries/images/versions/read and write (and Microsoft.Authorization/roleAssignments/write to share)",
        retry_after,
    )
}

/// The `<gallery>/<definition>/<version>` name of a version id.
pub fn short_name(id: &str) -> String {
    let p: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    match p.as_slice() {
        [.., "galleries", g, "images", d, "versions", v] => format!("{g}/{d}/{v}"),
        _ => id.to_string(),
    }
}

/// A version's replication to `region`: (state, progress) from `replicationStatus`; `None` when
/// the region is not among its target regions.
fn region_state(v: &Value, region: &str) -> Option<(ImageState, Option<i32>)> {
    let home = v
        .get("location")
        .and_then(Value::as_str)
        .is_some_and(|l| same_region(l, region));
    let targeted = targets(v).iter().any(|t| same_region(t, region)) || home;
    if !targeted {
        return None;
    }
    let summary = v
        .pointer("/properties/replicationStatus/summary")
        .and_then(Value::as_array)
        .and_then(|s| {
            s.iter().find(|r| {
                r.get("region")
                    .and_then(Value::as_str)
                    .is_some_and(|x| same_region(x, region))
            })
        });
    let state = match summary.and_then(|r| r.get("state")).and_then(Value::as_str) {
        Some("Completed") => ImageState::Available,
        Some("Failed") => ImageState::Unusable("failed".into()),
        // Replicating, Unknown, or not reported yet.
        _ => ImageState::Creating,
    };
    let progress = summary
        .and_then(|r| r.get("progress"))
        .and_then(Value::as_i64)
        .map(|p| p as i32);
    Some((state, progress))
}

/// Regions as ARM writes them (`West Europe`) or as ids (`westeurope`).
fn same_region(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

fn targets(v: &Value) -> Vec<String> {
    v.pointer("/properties/publishingProfile/targetRegions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Parse one gallery image version.
pub fn parse_version(v: &Value) -> ImageInfo {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let state = match s("/properties/provisioningState").as_deref() {
        Some("Succeeded") => ImageState::Available,
        Some("Failed") => ImageState::Unusable("failed".into()),
        _ => ImageState::Creating,
    };
    ImageInfo {
        id: s("/id").unwrap_or_default(),
        name: short_name(&s("/id").unwrap_or_default()),
        size_bytes: v
            .pointer("/properties/storageProfile/osDiskImage/sizeInGB")
            .and_then(Value::as_u64)
            .map(|g| g << 30),
        disk_format: None,
        container_format: None,
        visibility: "private".into(),
        encrypted: None,
        state: Some(state),
        whole_machine: false,
        replicated_from_backup: false,
        shared_from_other_account: false,
        digest: None,
        checksum: None,
        properties: Default::default(),
        created_at: s("/properties/publishingProfile/publishedDate"),
        carried: Default::default(),
    }
}

/// The Azure Compute Gallery provider.
pub struct Azure {
    http: reqwest::Client,
    backoff: Backoff,
    tokens: entra::Tokens,
}

impl Default for Azure {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

impl Azure {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            http: cloud::client(),
            backoff,
            tokens: entra::Tokens::default(),
        }
    }

    /// A version's resource id from an id or a `<gallery>/<definition>/<version>` name.
    fn version_id(acct: &Account, name: &str) -> Result<String, ProviderError> {
        if name.starts_with("/subscriptions/") {
            return Ok(name.trim_end_matches('/').to_string());
        }
        let (Some(sub), Some(rg)) = (acct.text("subscriptionId"), acct.text("resourceGroup")) else {
            return Err(ProviderError::permanent(
                "an image named <gallery>/<definition>/<version> needs subscriptionId and resourceGroup in the credentials Secret",
            ));
        };
        match name.split('/').collect::<Vec<_>>().as_slice() {
            [g, d, v] => Ok(format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{g}/images/{d}/versions/{v}"
            )),
            _ => Err(ProviderError::permanent(format!(
                "{name} is neither a gallery image version id nor <gallery>/<definition>/<version>"
            ))),
        }
    }

    /// One ARM call on `path` (a resource id, or one with a suffix).
    async fn call(
        &self,
        acct: &Account,
        op: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ProviderError> {
        let root = cloud::endpoint(acct.endpoint.as_deref(), ARM, "");
        let mut url = reqwest::Url::parse(&format!("{root}{path}"))
            .map_err(|e| ProviderError::permanent(format!("{op}: bad endpoint {root}: {e}")))?;
        let api = if op.starts_with("RoleAssignments_") {
            AUTH_API_VERSION
        } else {
            API_VERSION
        };
        url.query_pairs_mut()
            .append_pair("api-version", api)
            .extend_pairs(query.iter().copied());
        // Every call here is idempotent (a read, an update that writes the whole target list, a
        // role assignment by its derived name, a delete): a passing server error is retried
        // within the call.
        let call = JsonCall {
            op,
            method,
            url,
            body,
            retry: true,
        };
        // Handed out (workload identity), else the Secret's app's.
        let token = || async {
            match acct.text("accessToken") {
                Some(t) => Ok(t),
                None => self.tokens.get(&self.http, acct).await,
            }
        };
        bearer::json_call(&self.http, &self.backoff, call, token, error).await
    }

    /// Every page of a list (`value`, then `nextLink`'s path and query on our endpoint).
    async fn list(
        &self,
        acct: &Account,
        op: &str,
        path: &str,
        first: &[(&str, &str)],
    ) -> Result<Vec<Value>, ProviderError> {
        let mut path = path.to_string();
        let mut query: Vec<(String, String)> = first.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut out = Vec::new();
        for _ in 0..cloud::MAX_PAGES {
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let v = self.call(acct, op, reqwest::Method::GET, &path, &q, None).await?;
            out.extend(v.get("value").and_then(Value::as_array).cloned().unwrap_or_default());
            let Some(next) = v
                .get("nextLink")
                .and_then(Value::as_str)
                .and_then(|n| reqwest::Url::parse(n).ok())
            else {
                break;
            };
            path = next.path().to_string();
            query = next
                .query_pairs()
                .filter(|(k, _)| k != "api-version")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        }
        Ok(out)
    }

    /// The Reader role assignments at the version's own scope (`atScope()` lists those above it
    /// too: a Reader on the subscription is not a share of ours to make or withdraw).
    async fn readers(&self, acct: &Account, id: &str) -> Result<Vec<Value>, ProviderError> {
        let path = format!("{id}/providers/Microsoft.Authorization/roleAssignments");
        let all = self
            .list(acct, "RoleAssignments_ListForScope", &path, &[("$filter", "atScope()")])
            .await?;
        Ok(all.into_iter().filter(|a| is_reader_at(a, id)).collect())
    }

    async fn get(&self, acct: &Account, id: &str) -> Result<Option<Value>, ProviderError> {
        let q = [("$expand", "ReplicationStatus")];
        match self
            .call(acct, "GalleryImageVersions_Get", reqwest::Method::GET, id, &q, None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set the version's target regions (a long-running update; its progress is read from the
    /// version). The other target regions are written back as they were.
    async fn set_targets(&self, acct: &Account, version: &Value, targets: Vec<Value>) -> Result<(), ProviderError> {
        let id = version.get("id").and_then(Value::as_str).unwrap_or("");
        let body = json!({"properties": {"publishingProfile": {"targetRegions": targets}}});
        self.call(
            acct,
            "GalleryImageVersions_Update",
            reqwest::Method::PATCH,
            id,
            &[],
            Some(body),
        )
        .await
        .map(|_| ())
    }
}

/// Whether role assignment `a` is the Reader role at scope `id` itself.
fn is_reader_at(a: &Value, id: &str) -> bool {
    let text = |p: &str| a.pointer(p).and_then(Value::as_str).unwrap_or("");
    text("/properties/scope").eq_ignore_ascii_case(id)
        && text("/properties/roleDefinitionId")
            .to_ascii_lowercase()
            .ends_with(&format!("/roledefinitions/{READER}"))
}

/// The share account of a role assignment (`user:<object id>`), for the principal types a share names.
fn principal_of(a: &Value) -> Option<String> {
    let kind = a.pointer("/properties/principalType").and_then(Value::as_str)?;
    let id = a.pointer("/properties/principalId").and_then(Value::as_str)?;
    let (prefix, _) = PRINCIPAL_TYPES.iter().find(|(_, t)| t.eq_ignore_ascii_case(kind))?;
    Some(format!("{prefix}:{}", id.to_ascii_lowercase()))
}

/// The subscription of a resource id (`/subscriptions/{s}/...`).
fn subscription_of(id: &str) -> &str {
    id.strip_prefix("/subscriptions/")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// The version's target regions, as written back (name, replica count, storage type, encryption).
fn target_list(v: &Value) -> Vec<Value> {
    v.pointer("/properties/publishingProfile/targetRegions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Catalog for Azure {
    fn exchange(&self, how: &Exchange) -> impl std::future::Future<Output = Result<Temporary, ProviderError>> + Send {
        wi::exchange(&self.http, how)
    }

    type Image = Value;
    const KIND: ProviderKind = ProviderKind::Azure;
    const SERVICE: &'static str = "Azure Compute Gallery";
    const CAN_CANCEL: bool = false;
    /// Adding a region the version targets already changes nothing.
    const START_IDEMPOTENT: bool = true;
    /// ARM reads what it wrote.
    const LISTS_LATE: std::time::Duration = std::time::Duration::from_secs(30);
    /// A withdraw lists the principal's assignments itself (by their own names).
    const UNSHARE_IS_IDEMPOTENT: bool = true;

    async fn lookup(
        &self,
        acct: &Account,
        _region: &str,
        selector: &ImageSelector,
    ) -> Result<Vec<Value>, ProviderError> {
        let name = match selector {
            ImageSelector::Id(v) | ImageSelector::Name(v) => v,
        };
        let id = Self::version_id(acct, name)?;
        Ok(self.get(acct, &id).await?.into_iter().collect())
    }

    async fn own_images(&self, acct: &Account, region: &str, pattern: &str) -> Result<Vec<Value>, ProviderError> {
        // `<gallery>/<definition>/<version pattern>`: the definition's versions, every page.
        let Some((definition, _)) = pattern.rsplit_once('/') else {
            return Err(ProviderError::permanent(format!(
                "imageName {pattern}: follow names versions as <gallery>/<definition>/<version pattern>"
            )));
        };
        let base = Self::version_id(acct, &format!("{definition}/x"))?;
        let out = self
            .list(
                acct,
                "GalleryImageVersions_ListByGalleryImage",
                base.trim_end_matches("/x"),
                &[],
            )
            .await?;
        Ok(out
            .into_iter()
            .filter(|v| {
                v.pointer("/properties/publishingProfile/excludeFromLatest") != Some(&json!(true))
                    && v.get("location")
                        .and_then(Value::as_str)
                        .is_some_and(|l| same_region(l, region))
            })
            .collect())
    }

    async fn image(&self, acct: &Account, _region: &str, id: &str) -> Result<Option<Value>, ProviderError> {
        self.get(acct, id).await
    }

    fn id(image: &Value) -> String {
        image.get("id").and_then(Value::as_str).unwrap_or("").to_string()
    }

    fn is(image: &Value, id: &str) -> bool {
        let mine = Self::id(image);
        mine.eq_ignore_ascii_case(id) || short_name(&mine) == id
    }

    fn name(image: &Value) -> String {
        short_name(&Self::id(image))
    }

    fn parse(image: &Value) -> ImageInfo {
        parse_version(image)
    }

    /// The version's own state (the source, a follow candidate).
    fn state(image: &Value) -> (ImageState, Option<i32>) {
        (parse_version(image).state.unwrap_or(ImageState::Creating), None)
    }

    fn copy_state(image: &Value, region: &str) -> Option<(ImageState, Option<i32>)> {
        region_state(image, region)
    }

    async fn find(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let Some(v) = self.get(acct, &req.source.id).await? else {
            return Ok(None);
        };
        Ok(targets(&v)
            .iter()
            .any(|t| same_region(t, &req.region))
            .then(|| CopyHandle::of_image(req.source.id.clone())))
    }

    /// The region added to the version's target regions, unless it is there already (an
    /// answer lost, a restart: that is the copy).
    async fn request_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let v = self
            .get(acct, &req.source.id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("image version {} is gone", req.source.id)))?;
        let mut list = target_list(&v);
        // The home region is always among the targets (ARM requires it).
        let home = v.get("location").and_then(Value::as_str).unwrap_or("").to_string();
        if !list.iter().any(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| same_region(n, &home))
        }) {
            list.push(json!({"name": home}));
        }
        if !list.iter().any(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| same_region(n, &req.region))
        }) {
            let mut t = json!({"name": req.region, "regionalReplicaCount": req.replica_count.unwrap_or(1)});
            if let Some(kind) = &req.storage_account_type {
                t["storageAccountType"] = json!(kind);
            }
            if let Some(des) = &req.kms_key_id {
                t["encryption"] = json!({"osDiskImage": {"diskEncryptionSetId": des}});
            }
            list.push(t);
            self.set_targets(acct, &v, list).await?;
        }
        Ok(CopyHandle::of_image(req.source.id.clone()))
    }

    /// `request_copy` finds a copy under way itself: one read of the version, not two.
    async fn start(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        self.request_copy(acct, req).await
    }

    async fn cancel(&self, _acct: &Account, _region: &str, _handle: &CopyHandle) -> Result<(), ProviderError> {
        Err(ProviderError::permanent("Azure cannot cancel a replication in flight"))
    }

    /// The copy in `region` goes: `region` leaves the version's target regions.
    async fn delete(&self, acct: &Account, region: &str, id: &str) -> Result<(), ProviderError> {
        let Some(v) = self.get(acct, id).await? else {
            return Ok(());
        };
        let home = v.get("location").and_then(Value::as_str).unwrap_or("");
        if same_region(home, region) {
            return Ok(()); // the version's own region: it is the version, never deleted here
        }
        let list = target_list(&v);
        let kept: Vec<Value> = list
            .iter()
            .filter(|t| {
                !t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| same_region(n, region))
            })
            .cloned()
            .collect();
        if kept.len() == list.len() {
            return Ok(());
        }
        self.set_targets(acct, &v, kept).await
    }

    /// The principals with Reader on the version itself.
    async fn shared_with(&self, acct: &Account, _region: &str, id: &str) -> Result<Vec<String>, ProviderError> {
        Ok(self.readers(acct, id).await?.iter().filter_map(principal_of).collect())
    }

    /// Share: Reader for the principal at the version, named from the version and the
    /// principal (the same share twice is one assignment; one made by hand under another name
    /// answers `RoleAssignmentExists`: shared). Withdraw: every Reader assignment of the
    /// principal at the version goes, by its own id (absent is success).
    async fn set_share(
        &self,
        acct: &Account,
        _region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> Result<(), ProviderError> {
        let (prefix, principal) = account.split_once(':').unwrap_or(("", account));
        if !add {
            for a in self.readers(acct, id).await? {
                if principal_of(&a).as_deref() != Some(account) {
                    continue;
                }
                let at = a.get("id").and_then(Value::as_str).unwrap_or("");
                let r = self
                    .call(acct, "RoleAssignments_Delete", reqwest::Method::DELETE, at, &[], None)
                    .await;
                cloud::gone_is_ok(r)?;
            }
            return Ok(());
        }
        let Some((_, kind)) = PRINCIPAL_TYPES.iter().find(|(p, _)| *p == prefix) else {
            return Err(ProviderError::permanent(format!(
                "{account} is not {}",
                SHARING.account_rule
            )));
        };
        let name = cloud::uuid_from(&format!("{}|{account}", id.to_ascii_lowercase()));
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
                subscription_of(id)
            ),
            "principalId": principal,
            "principalType": kind,
        }});
        let path = format!("{id}/providers/Microsoft.Authorization/roleAssignments/{name}");
        match self
            .call(
                acct,
                "RoleAssignments_Create",
                reqwest::Method::PUT,
                &path,
                &[],
                Some(body),
            )
            .await
        {
            Err(e) if e.code.as_deref() == Some("RoleAssignmentExists") => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

pub const CLOUD: Cloud = Cloud {
    kind: ProviderKind::Azure,
    service,
    sharing: &SHARING,
    hosts: &["management.azure.com", "login.microsoftonline.com"],
    source_rules: no_rules,
    default_name: |_, source| source.name.clone(),
    spec_rules,
    free_form_regions: false,
    fields: &["replicaCount", "storageAccountType"],
    other_owner: Some(
        "an image version belongs to its gallery's subscription; share it with the other subscription's principal with shareWith (Reader on the version) instead",
    ),
    identity: Some(&wi::IDENTITY),
    moves_bytes: false,
};

fn service() -> Arc<dyn super::super::ImageService> {
    Arc::new(Azure::default())
}

fn spec_rules(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    if spec.destinations.len() > MAX_REGIONS {
        out.push(Violation::new(
            "spec.destinations",
            "TooManyRegions",
            format!("an Azure image version replicates to at most {MAX_REGIONS} regions"),
        ));
    }
    // The copy in every region is the version: its shares are the version's, alike everywhere.
    fn accounts(d: &crate::api::v1alpha1::DestinationSpec) -> Vec<&str> {
        let mut a: Vec<&str> = d.share_with.iter().map(|w| w.account.as_str()).collect();
        a.sort_unstable();
        a
    }
    let first = spec.destinations.iter().position(|d| !d.share_with.is_empty());
    for (i, d) in spec.destinations.iter().enumerate() {
        if let Some(f) = first
            && !d.share_with.is_empty()
            && accounts(d) != accounts(&spec.destinations[f])
        {
            out.push(Violation::new(
                format!("spec.destinations[{i}].shareWith"),
                "SharesDiffer",
                format!(
                    "an Azure copy is the image version itself in another region, so a share (Reader on the version) holds in every region: every destination that sets shareWith must name the accounts of destinations[{f}].shareWith"
                ),
            ));
        }
        if let Some(kind) = d.storage_account_type.as_deref().filter(|k| !STORAGE_TYPES.contains(k)) {
            out.push(Violation::new(
                format!("spec.destinations[{i}].storageAccountType"),
                "InvalidStorageAccountType",
                format!(
                    "{kind} is not a storage account type of image version replicas: one of {}",
                    STORAGE_TYPES.join(", ")
                ),
            ));
        }
        if let Some(n) = d.replica_count.filter(|n| !(1..=100).contains(n)) {
            out.push(Violation::new(
                format!("spec.destinations[{i}].replicaCount"),
                "InvalidReplicaCount",
                format!("replicaCount {n}: a region holds 1 to 100 replicas of an image version"),
            ));
        }
        if d.name.is_some() {
            out.push(Violation::new(
                format!("spec.destinations[{i}].name"),
                "FieldNotSupported",
                "an Azure copy is the image version itself replicated to the region: it keeps the version's name; remove name".to_string(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_states_and_errors() {
        let id =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/golden/versions/1.2.0";
        assert_eq!(short_name(id), "g1/golden/1.2.0");
        let v = json!({"id": id, "location": "East US", "properties": {
            "provisioningState": "Succeeded",
            "publishingProfile": {"targetRegions": [{"name": "East US"}, {"name": "West Europe"}], "publishedDate": "2026-12-01T00:00:00+00:00"},
            "replicationStatus": {"summary": [
                {"region": "East US", "state": "Completed", "progress": 100},
                {"region": "West Europe", "state": "Replicating", "progress": 40}]}}});
        assert_eq!(region_state(&v, "westeurope"), Some((ImageState::Creating, Some(40))));
        assert_eq!(region_state(&v, "eastus"), Some((ImageState::Available, Some(100))));
        assert_eq!(region_state(&v, "southeastasia"), None, "not a target: no copy there");
        assert!(<Azure as Catalog>::is(&v, "g1/golden/1.2.0") && <Azure as Catalog>::is(&v, &id.to_uppercase()));
        assert_eq!(
            parse_version(&v).created_at.as_deref(),
            Some("2026-12-01T00:00:00+00:00")
        );
        let e = error(
            "GalleryImageVersions_Update",
            409,
            r#"{"error":{"code":"OperationNotAllowed","message":"in progress"}}"#,
            None,
        );
        assert!(e.error.retryable && !e.throttled);
        assert!(error("x", 429, r#"{"error":{"code":"TooManyRequests","message":"m"}}"#, None).throttled);
        assert!(
            error(
                "x",
                403,
                r#"{"error":{"code":"AuthorizationFailed","message":"m"}}"#,
                None
            )
            .error
            .auth
        );
    }

    /// What Azure cannot do is refused before any call; the example is valid as it stands.
    #[test]
    fn refuses_differing_shares_bad_principals_and_names_and_takes_the_example() {
        let o: crate::api::ImageReplication =
            serde_yaml::from_str(include_str!("../../../../../deploy/examples/azure.yaml")).unwrap();
        assert_eq!(crate::validation::image_replication(&o.spec), vec![]);
        let mut s = o.spec.clone();
        s.destinations[1].share_with.truncate(1);
        s.destinations[2].share_with =
            serde_json::from_value(json!([{"account": "00000000-0000-4000-8000-000000000002"}])).unwrap();
        s.destinations[0].name = Some("copy".into());
        let got = crate::validation::image_replication(&s);
        let fields: Vec<(&str, &str)> = got.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(
            fields,
            [
                ("spec.destinations[0].name", "FieldNotSupported"),
                ("spec.destinations[1].shareWith", "SharesDiffer"),
                ("spec.destinations[2].shareWith", "SharesDiffer"),
                ("spec.destinations[2].shareWith[0].account", "InvalidShareAccount"),
            ],
            "{got:?}"
        );
        assert!(
            got[1].message.contains("destinations[0].shareWith"),
            "{}",
            got[1].message
        );
        // One destination may share alone; principals are typed, object ids in lower case.
        let mut s = o.spec.clone();
        s.destinations[1].share_with.clear();
        assert_eq!(crate::validation::image_replication(&s), vec![]);
        assert!(valid_principal("user:3f2b7c1e-8d4a-4e6b-9c1d-2a5e7f9b0c13"));
        assert!(!valid_principal("user:3F2B7C1E-8D4A-4E6B-9C1D-2A5E7F9B0C13"));
        assert!(!valid_principal("device:3f2b7c1e-8d4a-4e6b-9c1d-2a5e7f9b0c13"));
        assert!(!valid_principal("group:3f2b7c1e8d4a4e6b9c1d2a5e7f9b0c13"));
        let mut s = o.spec.clone();
        s.provider.assume_role =
            serde_json::from_value(json!({"roleArn": "22222222-0000-4000-8000-000000000001"})).unwrap();
        assert_eq!(
            crate::validation::image_replication(&s)[0].reason,
            "InvalidRole",
            "no role to assume"
        );
    }

    /// A region's replica count and storage type are Azure's to take, within Azure's values.
    #[test]
    fn replica_counts_and_storage_types() {
        let o: crate::api::ImageReplication =
            serde_yaml::from_str(include_str!("../../../../../deploy/examples/azure.yaml")).unwrap();
        let mut s = o.spec.clone();
        s.destinations[0].replica_count = Some(3);
        s.destinations[0].storage_account_type = Some("Standard_ZRS".into());
        assert_eq!(crate::validation::image_replication(&s), vec![]);
        s.destinations[1].replica_count = Some(0);
        s.destinations[1].storage_account_type = Some("Standard_GRS".into());
        let got = crate::validation::image_replication(&s);
        let reasons: Vec<(&str, &str)> = got.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("spec.destinations[1].storageAccountType", "InvalidStorageAccountType"),
                ("spec.destinations[1].replicaCount", "InvalidReplicaCount")
            ],
            "{got:?}"
        );
        let mut other = s.clone();
        other.provider.kind = ProviderKind::Google;
        other.destinations.truncate(1);
        other.destinations[0].share_with.clear();
        let got = crate::validation::image_replication(&other);
        assert!(
            got.iter()
                .any(|v| v.field == "spec.destinations[0].replicaCount" && v.reason == "FieldNotSupported"),
            "{got:?}"
        );
    }

    /// Role assignments: only Reader at the version itself is a share; accounts as shares name them.
    #[test]
    fn reader_assignments_at_the_version_are_its_shares() {
        let id = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d/versions/1.0.0";
        let reader = format!("/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/{READER}");
        let a = |scope: &str, role: &str, kind: &str| json!({"properties": {"scope": scope, "roleDefinitionId": role, "principalId": "3F2B7C1E-8D4A-4E6B-9C1D-2A5E7F9B0C13", "principalType": kind}});
        assert!(is_reader_at(&a(&id.to_lowercase(), &reader, "Group"), id));
        assert!(
            !is_reader_at(&a("/subscriptions/s1", &reader, "Group"), id),
            "inherited from above"
        );
        assert!(!is_reader_at(
            &a(
                id,
                "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c",
                "Group"
            ),
            id
        ));
        assert_eq!(
            principal_of(&a(id, &reader, "Group")).as_deref(),
            Some("group:3f2b7c1e-8d4a-4e6b-9c1d-2a5e7f9b0c13")
        );
        assert_eq!(principal_of(&a(id, &reader, "ForeignGroup")), None);
        assert_eq!(subscription_of(id), "s1");
        let e = error(
            "RoleAssignments_Create",
            409,
            r#"{"error":{"code":"RoleAssignmentExists","message":"The role assignment already exists."}}"#,
            None,
        );
        assert_eq!(e.error.code.as_deref(), Some("RoleAssignmentExists"));
        assert!(!e.error.retryable, "not tried again within the call");
    }
}
