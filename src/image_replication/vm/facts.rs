//! What a cloud states about itself, as one value its provider module defines (`CLOUD`): its
//! kind, how to build its image service, its sharing rules, its endpoints' host patterns (the
//! egress default), its seed rules on a source image and its naming convention. The registry
//! ([`super::providers::CLOUDS`]) hands these to validation, the rules, the engine and the
//! egress default, so a cloud is named in its own room only.

use std::sync::Arc;

use crate::api::v1alpha1::{ImageReplicationSpec, ProviderKind};
use crate::api::violation::Violation;

use super::{ImageInfo, ImageService};

pub const GIB: u64 = 1 << 30;

/// A size for messages: `2.0 GiB`.
pub fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / GIB as f64)
}

/// What a cloud states about sharing an image (each provider module holds its own).
#[derive(Clone, Copy, Debug)]
pub struct Sharing {
    /// What an account id looks like, for the error message ("a 12-digit AWS account id").
    pub account_rule: &'static str,
    pub valid_account: fn(&str) -> bool,
    /// Accounts one image can be shared with.
    pub member_limit: usize,
    /// Where the limit is stated.
    pub limit_source: &'static str,
    /// The member accepts a share before it can use the image (huawei, openstack).
    pub needs_accept: bool,
    /// How long (seconds) a member that a share call added, or a withdraw removed, may take to
    /// show in (or leave) the image's member list; the call is not made again meanwhile.
    pub members_lag: u64,
    /// It refuses to share an image encrypted with its default key (huawei IMS, EC2); the
    /// operator cannot tell the key, so an encrypted source is not shared in place.
    pub refuses_encrypted_in_place: bool,
}

/// One cloud's facts.
pub struct Cloud {
    pub kind: ProviderKind,
    /// Builds its image service.
    pub service: fn() -> Arc<dyn ImageService>,
    /// How it shares images with other accounts.
    pub sharing: &'static Sharing,
    /// Host patterns of its public API endpoints: allowed by default (`--egress-cloud-hosts`).
    pub hosts: &'static [&'static str],
    /// The seed's rules on the described source image, beyond every cloud's (`rules::check`).
    pub source_rules: fn(&mut Check<'_>),
    /// The destination image's name when the spec gives none.
    pub default_name: fn(source_region: &str, source: &ImageInfo) -> String,
    /// Its spec rules beyond every cloud's (validation, before any call): what it cannot do
    /// with a destination (encrypt, carry so many tags) and what it needs (Huawei's agency).
    pub spec_rules: fn(&ImageReplicationSpec, &mut Vec<Violation>),
    /// Its region ids are its deployment's own (OpenStack's Keystone ids), not lowercase ids.
    pub free_form_regions: bool,
    /// Destination fields only this cloud takes (API names: `vaultId`, `resourceGroupId`).
    pub fields: &'static [&'static str],
    /// A copy owned by another account (`destinations[].account`): `None` when it can be;
    /// otherwise why not and what to do instead.
    pub other_owner: Option<&'static str>,
    /// How it gives short-lived keys (workload identity, assumed roles); `None`: its keys are
    /// always a Secret's (OpenStack: application credentials).
    pub identity: Option<&'static Identity>,
    /// The operator moves the image's bytes itself (the cloud has no cross-region copy): its
    /// copies count in `imgrep_bytes_transferred_total`.
    pub moves_bytes: bool,
}

/// A cloud's short-lived credentials: what its image service's `exchange` reads and takes.
pub struct Identity {
    /// The environment its managed Kubernetes gives a pod with a workload identity (read as the
    /// cloud's SDKs read it), and any endpoint override its SDKs honour.
    pub variables: &'static [&'static str],
    /// The form of a role (`assumeRole.roleArn`), for messages.
    pub role_rule: &'static str,
    pub valid_role: fn(&str) -> bool,
    /// The audience its security token service expects in the ServiceAccount token (the
    /// chart's projected token volume).
    pub audience: &'static str,
}

/// No spec rules beyond every cloud's.
pub fn no_spec_rules(_: &ImageReplicationSpec, _: &mut Vec<Violation>) {}

/// A cloud that cannot encrypt a copy: every destination asking for it is refused.
pub fn no_encryption(spec: &ImageReplicationSpec, out: &mut Vec<Violation>) {
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.encryption.is_some() {
            out.push(Violation::new(
                format!("spec.destinations[{i}].encryption"),
                "EncryptionNotSupported",
                format!(
                    "provider {} cannot encrypt a copy; remove encryption",
                    spec.provider.kind.as_str()
                ),
            ));
        }
    }
}

/// The source image's own name: the convention of most clouds.
pub fn source_name(_source_region: &str, source: &ImageInfo) -> String {
    source.name.clone()
}

/// No rules beyond every cloud's.
pub fn no_rules(_: &mut Check<'_>) {}

/// Limits that are configuration rather than seed facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// OpenStack: the largest image the operator copies (it streams every byte itself).
    pub openstack_max_bytes: u64,
    /// OpenStack: disk formats refused for cross-region copies (default `iso`, as Huawei IMS,
    /// which is built on OpenStack, refuses ISO images).
    pub openstack_refused_formats: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            openstack_max_bytes: 1024 * GIB,
            openstack_refused_formats: vec!["iso".into()],
        }
    }
}

/// What the rules of a cloud look at, and the violations found.
pub struct Check<'a> {
    pub cloud: &'a Cloud,
    pub spec: &'a ImageReplicationSpec,
    pub source: &'a ImageInfo,
    pub limits: &'a Limits,
    /// The spec field that names the source image.
    pub src_field: &'static str,
    /// `source image <id> (<name>)`, for messages.
    pub img: String,
    pub size: u64,
    pub iso: bool,
    pub out: Vec<Violation>,
}

impl Check<'_> {
    pub fn refuse(&mut self, field: String, reason: &'static str, message: String) {
        self.out.push(Violation::new(field, reason, message));
    }
}
