//! Static validation of specs: pure functions of the spec (and of the egress policy installed
//! at start-up, see [`crate::egress`]), no client, no provider calls.
//!
//! These repeat the CEL rules of the CRD schema (so the no-cluster `replicate` command and
//! clusters that skip CEL get the same answers) and add the rules the schema cannot express.
//! Each broken rule is a [`Violation`] naming the field, a CamelCase reason and a message a person
//! can act on.

use std::collections::HashSet;
use std::time::Duration;

use crate::api::v1alpha1::{DestinationSpec, ImageReplicationSpec, ProviderKind, ReplicaInstanceSpec, ReplicaProvider};
use crate::image_replication::vm::providers;
use crate::{egress, regions};

pub use crate::api::violation::{Violation, summarize};

fn valid_region(r: &str) -> bool {
    let b = r.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A free-form region id (OpenStack's Keystone ids, case-sensitive, the default is
/// `RegionOne`): at most 255 characters, no control characters or '/'.
fn valid_free_form_region(r: &str) -> bool {
    !r.trim().is_empty() && r.len() <= 255 && !r.chars().any(|c| c.is_control() || c == '/')
}

fn check_region(out: &mut Vec<Violation>, field: &str, region: &str) {
    if !valid_region(region) {
        out.push(Violation::new(
            field,
            "InvalidRegion",
            format!("{region:?} is not a region id (lowercase letters, digits and '-', at most 63 characters)"),
        ));
    }
}

/// Region ids are the provider's: most clouds (and oci's names) take lowercase ids; a cloud
/// whose regions are its deployment's own (`Cloud::free_form_regions`) takes them as they are.
fn check_region_of(out: &mut Vec<Violation>, kind: ProviderKind, field: &str, region: &str) {
    if !providers::cloud(kind).is_some_and(|c| c.free_form_regions) {
        return check_region(out, field, region);
    }
    if !valid_free_form_region(region) {
        out.push(Violation::new(
            field,
            "InvalidRegion",
            format!(
                "{region:?} is not a {} region id (1 to 255 characters, no '/' or control characters)",
                kind.as_str()
            ),
        ));
    }
}

/// Validate an ImageReplication spec: every rule it breaks, each naming its field.
pub fn image_replication(spec: &ImageReplicationSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let kind = spec.provider.kind;
    let src = &spec.source;

    source_and_provider(&mut out, spec);

    if spec.destinations.is_empty() {
        out.push(Violation::new(
            "spec.destinations",
            "NoDestinations",
            "at least one destination is required",
        ));
    }
    if spec.destinations.len() > 64 {
        out.push(Violation::new(
            "spec.destinations",
            "TooManyDestinations",
            format!("at most 64 destinations are allowed, got {}", spec.destinations.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, d) in spec.destinations.iter().enumerate() {
        let f = |name: &str| format!("spec.destinations[{i}].{name}");
        check_region_of(&mut out, kind, &f("region"), &d.region);
        if !seen.insert(d.region.as_str()) {
            out.push(Violation::new(
                f("region"),
                "DuplicateDestinationRegion",
                format!(
                    "region {} appears more than once; destination regions must be unique",
                    d.region
                ),
            ));
        }
        destination(&mut out, spec, i, d);
    }
    if kind == ProviderKind::Oci
        && let Some(r) = &src.reference
        && let Err(e) = crate::oci::ImageRef::parse(r)
    {
        out.push(Violation::new("spec.source.reference", "InvalidReference", e));
    }
    if let Some(w) = spec.schedule.as_ref().and_then(|x| x.window.as_ref())
        && let Err((field, m)) = crate::image_replication::window::parse(w)
    {
        out.push(Violation::new(
            format!("spec.schedule.window.{field}"),
            "InvalidCopyWindow",
            m,
        ));
    }
    if let Some(p) = &spec.publish
        && !valid_subdomain(&p.config_map_name)
    {
        out.push(Violation::new(
            "spec.publish.configMapName",
            "InvalidName",
            format!(
                "{:?} is not a ConfigMap name (a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253)",
                crate::cloud::short(&p.config_map_name)
            ),
        ));
    }
    follow_and_retention(&mut out, spec);
    egress_of_image_replication(&mut out, spec);
    out
}

/// The rules of `source.follow`, `source.checkInterval` and `retention`.
fn follow_and_retention(out: &mut Vec<Violation>, spec: &ImageReplicationSpec) {
    use crate::image_replication::over_time as follow;
    let src = &spec.source;
    let glob = src.image_name.as_deref().is_some_and(|n| n.contains(['*', '?']));
    let following = follow::following(src);
    if following && spec.provider.kind == ProviderKind::Oci {
        out.push(Violation::new(
            "spec.source.follow",
            "FollowNotSupported",
            "source.follow is for the VM clouds; an oci source.reference with a tag is followed at every drift check already",
        ));
    } else if following && src.image_name.is_none() {
        out.push(Violation::new(
            "spec.source.follow",
            "FollowNeedsName",
            "source.follow: Newest needs source.imageName (a name or a glob such as golden-*), not source.imageId",
        ));
    }
    if glob && !following {
        out.push(Violation::new(
            "spec.source.imageName",
            "PatternNeedsFollow",
            "source.imageName with '*' or '?' is a pattern: set source.follow: Newest to copy the newest image matching it",
        ));
    }
    if src.check_interval.is_some() && !following && spec.provider.kind != ProviderKind::Oci {
        out.push(Violation::new(
            "spec.source.checkInterval",
            "CheckIntervalNeedsFollow",
            "source.checkInterval applies only with source.follow (or to an oci source tag)",
        ));
    } else if let Err(m) = follow::check_interval(src) {
        out.push(Violation::new("spec.source.checkInterval", "InvalidCheckInterval", m));
    }
    if let Some(keep) = spec.retention.as_ref().and_then(|r| r.keep) {
        if !following {
            out.push(Violation::new(
                "spec.retention.keep",
                "RetentionNeedsFollow",
                "retention.keep applies only with source.follow (a fixed source has one copy per destination)",
            ));
        } else if !(1..=100).contains(&keep) {
            out.push(Violation::new(
                "spec.retention.keep",
                "InvalidRetention",
                format!("retention.keep must be between 1 and 100, got {keep}"),
            ));
        }
    }
}

/// A Kubernetes object name of the DNS subdomain form (RFC 1123).
fn valid_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The rules of `spec.source` and `spec.provider`.
fn source_and_provider(out: &mut Vec<Violation>, spec: &ImageReplicationSpec) {
    let kind = spec.provider.kind;
    let src = &spec.source;
    check_region_of(out, kind, "spec.source.region", &src.region);
    let set = [&src.image_id, &src.image_name, &src.reference]
        .iter()
        .filter(|o| o.as_deref().is_some_and(|s| !s.is_empty()))
        .count();
    if set != 1 {
        out.push(Violation::new(
            "spec.source",
            "InvalidSource",
            format!("exactly one of source.imageId, source.imageName or source.reference must be set ({set} are)"),
        ));
    }
    match (kind, src.reference.is_some()) {
        (ProviderKind::Oci, false) => out.push(Violation::new(
            "spec.source.reference",
            "ReferenceRequired",
            "source.reference (a tag or digest reference) is required when provider.kind is oci",
        )),
        (k, true) if k != ProviderKind::Oci => out.push(Violation::new(
            "spec.source.reference",
            "ReferenceNotSupported",
            format!(
                "source.reference is only for provider.kind oci; provider {} takes source.imageId or source.imageName",
                k.as_str()
            ),
        )),
        _ => {}
    }

    if let Some(n) = spec.provider.max_concurrent_copies
        && !(1..=100).contains(&n)
    {
        out.push(Violation::new(
            "spec.provider.maxConcurrentCopies",
            "InvalidConcurrency",
            format!("maxConcurrentCopies must be between 1 and 100, got {n}"),
        ));
    }
    let identity = providers::cloud(kind).and_then(|c| c.identity);
    if kind != ProviderKind::Oci && spec.provider.credentials_secret_ref.is_none() && identity.is_none() {
        out.push(Violation::new(
            "spec.provider.credentialsSecretRef",
            "CredentialsRequired",
            format!(
                "provider {} needs credentialsSecretRef naming a Secret with its credentials (it has no workload identity)",
                kind.as_str()
            ),
        ));
    }
    if let Some(r) = &spec.provider.assume_role {
        role(out, kind, "spec.provider.assumeRole", r);
    }
    if let Some(cloud) = providers::cloud(kind) {
        (cloud.spec_rules)(spec, out);
    }
}

/// The rules of `spec.destinations[i].shareWith`: the cloud can share, each account id has the
/// cloud's form and appears once, at most the cloud's members per image, `acceptWith` only where
/// members accept.
fn shares(out: &mut Vec<Violation>, kind: ProviderKind, i: usize, d: &DestinationSpec) {
    if d.share_with.is_empty() {
        return;
    }
    let f = |name: String| format!("spec.destinations[{i}].shareWith{name}");
    let Some(rules) = providers::sharing(kind) else {
        out.push(Violation::new(
            f(String::new()),
            "FieldNotSupported",
            format!(
                "provider {} cannot share images with other accounts; remove shareWith",
                kind.as_str()
            ),
        ));
        return;
    };
    if d.share_with.len() > rules.member_limit {
        out.push(Violation::new(
            f(String::new()),
            "TooManyShares",
            format!(
                "{} accounts, but a {} image can be shared with at most {} ({})",
                d.share_with.len(),
                kind.as_str(),
                rules.member_limit,
                rules.limit_source
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (j, w) in d.share_with.iter().enumerate() {
        if !(rules.valid_account)(&w.account) {
            out.push(Violation::new(
                f(format!("[{j}].account")),
                "InvalidShareAccount",
                format!("{:?} is not {}", crate::cloud::short(&w.account), rules.account_rule),
            ));
        }
        if !seen.insert(w.account.as_str()) {
            out.push(Violation::new(
                f(format!("[{j}].account")),
                "DuplicateShareAccount",
                format!("account {} appears more than once in shareWith", w.account),
            ));
        }
        if w.accept_with.is_some() && !rules.needs_accept {
            let accepting: Vec<&str> = providers::CLOUDS
                .iter()
                .filter(|c| c.sharing.needs_accept)
                .map(|c| c.kind.as_str())
                .collect();
            out.push(Violation::new(
                f(format!("[{j}].acceptWith")),
                "FieldNotSupported",
                format!(
                    "a {} share needs no acceptance; acceptWith is only used by {}",
                    kind.as_str(),
                    accepting.join(" and ")
                ),
            ));
        }
        match &w.accept_with {
            Some(a) if a.name.is_empty() && a.assume_role.is_none() => out.push(Violation::new(
                f(format!("[{j}].acceptWith")),
                "InvalidSecretRef",
                "acceptWith needs name (a Secret of the member) or assumeRole (a role of the member's account)",
            )),
            Some(a) => {
                if let Some(r) = &a.assume_role {
                    role(out, kind, &f(format!("[{j}].acceptWith.assumeRole")), r);
                }
            }
            None => {}
        }
    }
}

/// The rules of `spec.destinations[i].account` (a copy owned by another account): where the
/// cloud allows it, with that cloud's account id form; elsewhere what to do instead.
fn owner(out: &mut Vec<Violation>, kind: ProviderKind, i: usize, d: &DestinationSpec) {
    let Some(a) = &d.account else { return };
    let f = |name: &str| format!("spec.destinations[{i}].account{name}");
    let instead = match providers::cloud(kind) {
        Some(cloud) => cloud.other_owner,
        None => Some("this provider's copies belong to its own account; share them with shareWith instead"),
    };
    if let Some(why) = instead {
        out.push(Violation::new(
            f(""),
            "FieldNotSupported",
            format!("provider {}: {why}", kind.as_str()),
        ));
        return;
    }
    if let Some(rules) = providers::sharing(kind)
        && !(rules.valid_account)(&a.id)
    {
        out.push(Violation::new(
            f(".id"),
            "InvalidShareAccount",
            format!("{:?} is not {}", crate::cloud::short(&a.id), rules.account_rule),
        ));
    }
    match (&a.credentials_secret_ref, &a.assume_role) {
        (None, None) => out.push(Violation::new(
            f(""),
            "CredentialsRequired",
            "account needs credentialsSecretRef (the account's keys) or assumeRole (a role of the account, assumed with the provider's credentials)",
        )),
        (Some(s), _) if s.name.is_empty() => out.push(Violation::new(
            f(".credentialsSecretRef.name"),
            "InvalidSecretRef",
            "account.credentialsSecretRef.name must name a Secret",
        )),
        _ => {}
    }
    if let Some(r) = &a.assume_role {
        role(out, kind, &f(".assumeRole"), r);
    }
}

/// A role to assume (`assumeRole`): the cloud has roles, and the role has the cloud's form.
fn role(out: &mut Vec<Violation>, kind: ProviderKind, field: &str, r: &crate::api::v1alpha1::AssumeRoleSpec) {
    match providers::cloud(kind).and_then(|c| c.identity) {
        None => out.push(Violation::new(
            field,
            "FieldNotSupported",
            format!(
                "provider {} has no roles to assume; name a Secret with the account's keys in credentialsSecretRef",
                kind.as_str()
            ),
        )),
        Some(i) if !(i.valid_role)(&r.role_arn) => out.push(Violation::new(
            format!("{field}.roleArn"),
            "InvalidRole",
            format!("{:?} is not {}", crate::cloud::short(&r.role_arn), i.role_rule),
        )),
        Some(_) => {}
    }
}

/// The rules of one destination (`spec.destinations[i]`) but the uniqueness of its region.
fn destination(out: &mut Vec<Violation>, spec: &ImageReplicationSpec, i: usize, d: &DestinationSpec) {
    let kind = spec.provider.kind;
    let src = &spec.source;
    let f = |name: &str| format!("spec.destinations[{i}].{name}");
    shares(out, kind, i, d);
    owner(out, kind, i, d);
    if d.region == src.region && d.encryption.is_none() && d.share_with.is_empty() {
        out.push(Violation::new(
            f("region"),
            "SameRegionWithoutEncryption",
            format!(
                "destination region {} equals source.region; a same-region copy is only allowed with encryption (copy-and-encrypt)",
                d.region
            ),
        ));
    }
    if let Some(name) = &d.name {
        let n = name.chars().count();
        if !(2..=128).contains(&n) {
            out.push(Violation::new(
                f("name"),
                "InvalidName",
                format!("name must be 2 to 128 characters long, got {n}"),
            ));
        }
    }
    if d.encryption.is_some() && kind == ProviderKind::Oci {
        out.push(Violation::new(
            f("encryption"),
            "EncryptionNotSupported",
            format!("provider {} cannot encrypt a copy; remove encryption", kind.as_str()),
        ));
    }
    // The destination fields only one provider takes (the cloud's own rules are its room's).
    let owner_of = |field: &str| {
        providers::CLOUDS
            .iter()
            .find(|c| c.fields.contains(&field))
            .map_or(ProviderKind::Oci, |c| c.kind)
    };
    for (set, field) in [
        (d.resource_group_id.is_some(), "resourceGroupId"),
        (d.vault_id.is_some(), "vaultId"),
        (d.replica_count.is_some(), "replicaCount"),
        (d.storage_account_type.is_some(), "storageAccountType"),
        (d.project.is_some(), "project"),
        (d.registry.is_some(), "registry"),
    ] {
        let owner = owner_of(field);
        if set && kind != owner {
            out.push(Violation::new(
                f(field),
                "FieldNotSupported",
                format!(
                    "{field} is only used by provider {}, not {}",
                    owner.as_str(),
                    kind.as_str()
                ),
            ));
        }
    }
    if kind == ProviderKind::Oci && d.registry.as_deref().is_none_or(str::is_empty) {
        out.push(Violation::new(
            f("registry"),
            "RegistryRequired",
            "every destination needs registry when provider.kind is oci",
        ));
    } else if kind == ProviderKind::Oci
        && let Some(r) = d.registry.as_deref()
    {
        match crate::oci::RegistryAddr::parse(r) {
            Err(e) => out.push(Violation::new(f("registry"), "InvalidRegistry", e)),
            Ok(addr) => {
                if let Some(n) = d.name.as_deref()
                    && let Err(e) = crate::image_replication::oci::replicator::repository_name(&addr, n)
                {
                    out.push(Violation::new(f("name"), "InvalidName", format!("{}: {e}", f("name"))));
                }
            }
        }
    }
}

/// The egress policy installed at start-up, applied to one URL the spec names.
fn check_egress(out: &mut Vec<Violation>, field: &str, class: egress::Class, url: &str) {
    if let Err(r) = egress::current().check_url(class, url) {
        out.push(Violation::new(
            field,
            "EgressRefused",
            format!("{r}; nothing was contacted (the cluster admin sets the policy: README, Security)"),
        ));
    }
}

fn check_registry_egress(out: &mut Vec<Violation>, field: &str, registry: &str) {
    if let Ok(addr) = crate::oci::RegistryAddr::parse(registry) {
        check_egress(out, field, egress::Class::Registry, &addr.url());
    }
}

fn egress_of_image_replication(out: &mut Vec<Violation>, spec: &ImageReplicationSpec) {
    if spec.provider.kind == ProviderKind::Oci {
        if let Some(r) = &spec.source.reference
            && let Ok(r) = crate::oci::ImageRef::parse(r)
        {
            check_egress(out, "spec.source.reference", egress::Class::Registry, &r.registry.url());
        }
        for (i, d) in spec.destinations.iter().enumerate() {
            if let Some(reg) = &d.registry {
                check_registry_egress(out, &format!("spec.destinations[{i}].registry"), reg);
            }
        }
    } else if let Some(e) = &spec.provider.endpoint {
        let regions = std::iter::once(&spec.source.region).chain(spec.destinations.iter().map(|d| &d.region));
        let mut seen = std::collections::BTreeSet::new();
        for region in regions {
            let url = e.replace("{region}", region);
            if reqwest::Url::parse(&url).is_ok() && seen.insert(url.clone()) {
                let before = out.len();
                check_egress(out, "spec.provider.endpoint", egress::Class::Cloud, &url);
                if out.len() > before {
                    break;
                }
            }
        }
    }
}

/// Parse a duration such as `30s`, `10m` or `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        })?)?;
    }
    num.is_empty().then(|| Duration::from_secs(total))
}

/// Parse a byte quantity such as `200Mi` or `50M` into bytes.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let mult = match &s[digits..] {
        "" => 1,
        "k" => 1_000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Shortest full-resync interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Validate a ReplicaInstance spec.
pub fn replica_instance(spec: &ReplicaInstanceSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let p = &spec.primary;
    check_region(&mut out, "spec.primary.region", &p.region);
    check_region(&mut out, "spec.region", &spec.region);
    if spec.region == p.region {
        out.push(Violation::new(
            "spec.region",
            "SameRegionAsPrimary",
            format!("the replica region {} must differ from primary.region", spec.region),
        ));
    } else if regions::is_cross_border(&p.region, &spec.region) {
        out.push(Violation::new(
            "spec.region",
            "CrossBorderReplication",
            format!(
                "replicating from {} to {} crosses the mainland-China border, which is not supported; pick a replica region in the same jurisdiction",
                p.region, spec.region
            ),
        ));
    }
    let replica_registry = spec
        .replica
        .as_ref()
        .and_then(|r| r.registry.as_deref())
        .filter(|s| !s.is_empty());
    match p.provider {
        ReplicaProvider::Oci => {
            if p.registry.as_deref().is_none_or(str::is_empty) {
                out.push(Violation::new(
                    "spec.primary.registry",
                    "RegistryRequired",
                    "primary.registry is required when primary.provider is oci",
                ));
            }
            match replica_registry {
                None => out.push(Violation::new(
                    "spec.replica.registry",
                    "RegistryRequired",
                    "replica.registry is required when primary.provider is oci",
                )),
                Some(r) if Some(r.trim_end_matches('/')) == p.registry.as_deref().map(|s| s.trim_end_matches('/')) => {
                    out.push(Violation::new(
                        "spec.replica.registry",
                        "ReplicaIsPrimary",
                        "replica.registry is the primary registry; the operator never writes to the primary",
                    ))
                }
                Some(_) => {}
            }
        }
        ReplicaProvider::Tencent => {
            if p.instance_id.as_deref().is_none_or(str::is_empty) {
                out.push(Violation::new(
                    "spec.primary.instanceId",
                    "InstanceIdRequired",
                    "primary.instanceId (the TCR premium instance) is required when primary.provider is tencent",
                ));
            }
            if regions::TCR_REPLICATION_UNSUPPORTED.contains(&spec.region.as_str()) {
                out.push(Violation::new(
                    "spec.region",
                    "RegionNotSupported",
                    format!("TCR instance replication is not supported in region {}", spec.region),
                ));
            }
        }
    }
    sync_settings(&mut out, &spec.sync);
    if spec.primary.provider == ReplicaProvider::Oci
        && let Some(r) = &spec.primary.registry
    {
        check_registry_egress(&mut out, "spec.primary.registry", r);
    }
    if let Some(r) = spec.replica.as_ref().and_then(|t| t.registry.as_ref()) {
        check_registry_egress(&mut out, "spec.replica.registry", r);
    }
    out
}

/// The rules of `spec.sync`: interval, transfers, bandwidth limit, filters.
fn sync_settings(out: &mut Vec<Violation>, sync: &crate::api::v1alpha1::SyncSpec) {
    match parse_duration(&sync.interval) {
        None => out.push(Violation::new(
            "spec.sync.interval",
            "InvalidInterval",
            format!("{:?} is not a duration such as 30s, 10m or 1h30m", sync.interval),
        )),
        Some(d) if d < MIN_INTERVAL => out.push(Violation::new(
            "spec.sync.interval",
            "InvalidInterval",
            format!("interval {} is shorter than the minimum of 30s", sync.interval),
        )),
        Some(_) => {}
    }
    if !(1..=64).contains(&sync.max_concurrent_transfers) {
        out.push(Violation::new(
            "spec.sync.maxConcurrentTransfers",
            "InvalidConcurrency",
            format!(
                "maxConcurrentTransfers must be between 1 and 64, got {}",
                sync.max_concurrent_transfers
            ),
        ));
    }
    if let Some(b) = &sync.bandwidth_limit
        && parse_quantity(b).is_none_or(|n| n == 0)
    {
        out.push(Violation::new(
            "spec.sync.bandwidthLimit",
            "InvalidBandwidthLimit",
            format!("{b:?} is not a positive quantity such as 200Mi or 50M"),
        ));
    }
    for (i, filter) in sync.filters.iter().enumerate() {
        for (name, list) in [
            ("repositories", &filter.repositories),
            ("tags", &filter.tags),
            ("exclude", &filter.exclude),
        ] {
            if list.iter().any(|g| g.trim().is_empty()) {
                out.push(Violation::new(
                    format!("spec.sync.filters[{i}].{name}"),
                    "InvalidFilter",
                    "filter globs must not be empty",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::*;

    fn ir(kind: ProviderKind) -> ImageReplicationSpec {
        ImageReplicationSpec {
            provider: ProviderSpec {
                kind,
                credentials_secret_ref: Some(SecretRef { name: "creds".into() }),
                assume_role: None,
                endpoint: None,
                agency: Some("ims_admin".into()),
                max_concurrent_copies: None,
            },
            source: SourceSpec {
                region: "cn-north-4".into(),
                image_id: Some("img-1".into()),
                ..Default::default()
            },
            destinations: vec![DestinationSpec {
                region: "cn-east-3".into(),
                ..Default::default()
            }],
            deletion_policy: DeletionPolicy::Retain,
            retention: None,
            suspend: false,
            publish: None,
            schedule: None,
        }
    }

    fn reasons(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.reason).collect()
    }

    #[test]
    fn valid_huawei_spec_passes() {
        assert_eq!(image_replication(&ir(ProviderKind::Huawei)), vec![]);
    }

    type SpecCase = (&'static str, fn(&mut ImageReplicationSpec), &'static str);

    /// Each row (what is wrong with a valid Huawei spec, the one reason expected).
    fn check_spec_rows(cases: Vec<SpecCase>) {
        for (name, mutate, want) in cases {
            let mut s = ir(ProviderKind::Huawei);
            mutate(&mut s);
            let got = image_replication(&s);
            assert_eq!(reasons(&got), vec![want], "{name}: {got:?}");
            assert!(got[0].field.starts_with("spec."), "{name}");
        }
    }

    #[test]
    fn image_replication_rules() {
        check_spec_rows(vec![
            ("no source", |s| s.source.image_id = None, "InvalidSource"),
            (
                "two sources",
                |s| s.source.image_name = Some("web".into()),
                "InvalidSource",
            ),
            (
                "reference for vm",
                |s| {
                    s.source.image_id = None;
                    s.source.reference = Some("r/x:1".into());
                },
                "ReferenceNotSupported",
            ),
            ("no destinations", |s| s.destinations.clear(), "NoDestinations"),
            (
                "duplicate region",
                |s| s.destinations.push(s.destinations[0].clone()),
                "DuplicateDestinationRegion",
            ),
            (
                "same region",
                |s| s.destinations[0].region = "cn-north-4".into(),
                "SameRegionWithoutEncryption",
            ),
            (
                "short name",
                |s| s.destinations[0].name = Some("a".into()),
                "InvalidName",
            ),
            (
                "long name",
                |s| s.destinations[0].name = Some("a".repeat(129)),
                "InvalidName",
            ),
            (
                "bad region",
                |s| s.destinations[0].region = "East 3".into(),
                "InvalidRegion",
            ),
            (
                "concurrency",
                |s| s.provider.max_concurrent_copies = Some(0),
                "InvalidConcurrency",
            ),
            ("no agency", |s| s.provider.agency = None, "AgencyRequired"),
            (
                "huawei encryption",
                |s| s.destinations[0].encryption = Some(EncryptionSpec::default()),
                "EncryptionNotSupported",
            ),
            (
                "alibaba field",
                |s| s.destinations[0].resource_group_id = Some("rg".into()),
                "FieldNotSupported",
            ),
        ]);
    }

    /// The rules of images over time: copy windows, follow, retention, publish.
    #[test]
    fn image_replication_rules_over_time() {
        check_spec_rows(vec![
            (
                "copy window",
                |s| {
                    s.schedule = Some(ScheduleSpec {
                        window: Some(WindowSpec {
                            start: "22:00".into(),
                            end: "06:00".into(),
                            time_zone: Some("Asia/Shangai".into()),
                        }),
                    })
                },
                "InvalidCopyWindow",
            ),
            (
                "follow by id",
                |s| {
                    s.source.follow = Some(Follow::Newest);
                },
                "FollowNeedsName",
            ),
            (
                "a pattern without follow",
                |s| {
                    s.source.image_id = None;
                    s.source.image_name = Some("golden-*".into());
                },
                "PatternNeedsFollow",
            ),
            (
                "check interval",
                |s| {
                    s.source.image_id = None;
                    s.source.image_name = Some("golden-*".into());
                    s.source.follow = Some(Follow::Newest);
                    s.source.check_interval = Some("5s".into());
                },
                "InvalidCheckInterval",
            ),
            (
                "retention without follow",
                |s| s.retention = Some(RetentionSpec { keep: Some(2) }),
                "RetentionNeedsFollow",
            ),
            (
                "publish name",
                |s| {
                    s.publish = Some(PublishSpec {
                        config_map_name: "Golden_Images".into(),
                    })
                },
                "InvalidName",
            ),
        ]);
    }

    /// shareWith: each cloud's account form and member limit, acceptWith only where members
    /// accept, no sharing on oci; a same-region destination that only shares is valid.
    #[test]
    fn share_with_follows_each_clouds_rules() {
        let share = |kind: ProviderKind, accounts: &[&str], accept: bool| {
            let mut s = ir(kind);
            if kind == ProviderKind::Oci {
                s.source = SourceSpec {
                    region: "cn-north-4".into(),
                    reference: Some("r.example.com/a/b:1".into()),
                    ..Default::default()
                };
                s.destinations[0].registry = Some("https://r2.example.com".into());
            }
            s.destinations[0].share_with = accounts
                .iter()
                .map(|a| ShareSpec {
                    account: a.to_string(),
                    accept_with: accept.then(|| AcceptSpec::secret("m")),
                })
                .collect();
            let v = image_replication(&s);
            (reasons(&v), v.iter().map(|v| v.field.clone()).collect::<Vec<_>>(), v)
        };
        let project = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        assert_eq!(share(ProviderKind::Huawei, &[project], true).0, Vec::<&str>::new());
        assert_eq!(share(ProviderKind::Aws, &["123456789012"], false).0, Vec::<&str>::new());
        let (r, f, v) = share(ProviderKind::Aws, &["12345"], false);
        assert_eq!(r, vec!["InvalidShareAccount"]);
        assert_eq!(f, vec!["spec.destinations[0].shareWith[0].account"]);
        assert!(v[0].message.contains("12-digit"), "{v:?}");
        assert_eq!(
            share(ProviderKind::Huawei, &["Project-B"], false).0,
            vec!["InvalidShareAccount"]
        );
        let (r, f, _) = share(ProviderKind::Alibaba, &["1234567890123456"], true);
        assert_eq!(
            (r, f),
            (
                vec!["FieldNotSupported"],
                vec!["spec.destinations[0].shareWith[0].acceptWith".to_string()]
            )
        );
        let many: Vec<String> = (0..51).map(|i| format!("12345678901234{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (r, _, v) = share(ProviderKind::Alibaba, &many, false);
        assert_eq!(r, vec!["TooManyShares"]);
        assert!(v[0].message.contains("at most 50"), "{v:?}");
        assert_eq!(
            share(ProviderKind::Tencent, &["100000000001", "100000000001"], false).0,
            vec!["DuplicateShareAccount"]
        );
        assert_eq!(share(ProviderKind::Oci, &["x"], false).0, vec!["FieldNotSupported"]);
        // A copy owned by another account: AWS only; elsewhere what to do instead.
        let owned = |kind: ProviderKind, id: &str| {
            let mut s = ir(kind);
            s.destinations[0].account = Some(OwnerSpec {
                id: id.into(),
                credentials_secret_ref: Some(SecretRef { name: "team-b".into() }),
                assume_role: None,
            });
            image_replication(&s)
        };
        assert_eq!(owned(ProviderKind::Aws, "210987654321"), vec![]);
        assert_eq!(
            reasons(&owned(ProviderKind::Aws, "team-b")),
            vec!["InvalidShareAccount"]
        );
        let v = owned(ProviderKind::Huawei, project);
        assert_eq!(reasons(&v), vec!["FieldNotSupported"]);
        assert!(v[0].message.contains("shareWith with acceptWith"), "{v:?}");
        let v = owned(ProviderKind::Alibaba, "1234567890123456");
        assert!(v[0].message.contains("custom image"), "{v:?}");
        // The seeds' "same region, cross-account": the source itself is shared.
        let mut s = ir(ProviderKind::Huawei);
        s.destinations[0].region = "cn-north-4".into();
        s.destinations[0].share_with = vec![ShareSpec {
            account: project.into(),
            accept_with: None,
        }];
        assert_eq!(image_replication(&s), vec![]);
    }

    #[test]
    fn region_ids_are_the_providers() {
        // Keystone's default region id is RegionOne: free-form and case-sensitive.
        let mut s = ir(ProviderKind::Openstack);
        s.provider.agency = None;
        s.source.region = "RegionOne".into();
        s.destinations[0].region = "RegionTwo".into();
        assert_eq!(image_replication(&s), vec![]);
        s.destinations[0].region = "Region/Two".into();
        assert_eq!(reasons(&image_replication(&s)), vec!["InvalidRegion"]);
        // The clouds that define their ids keep the strict pattern.
        let mut s = ir(ProviderKind::Huawei);
        s.destinations[0].region = "RegionOne".into();
        let got = image_replication(&s);
        assert_eq!(reasons(&got), vec!["InvalidRegion"]);
        assert_eq!(got[0].field, "spec.destinations[0].region");
    }

    #[test]
    fn alibaba_copies_carry_at_most_twenty_tags_with_the_token() {
        let mut s = ir(ProviderKind::Alibaba);
        s.provider.agency = None;
        s.destinations[0].tags = (0..19).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert_eq!(image_replication(&s), vec![]);
        s.destinations[0].tags.insert("k19".into(), "v".into());
        let got = image_replication(&s);
        assert_eq!(reasons(&got), vec!["TooManyTags"]);
        assert_eq!(got[0].field, "spec.destinations[0].tags");
        assert!(got[0].message.contains("at most 19"), "{}", got[0].message);
    }

    #[test]
    fn alibaba_same_region_copy_and_encrypt_is_allowed() {
        let mut s = ir(ProviderKind::Alibaba);
        s.provider.agency = None;
        s.destinations[0].region = "cn-north-4".into();
        s.destinations[0].encryption = Some(EncryptionSpec {
            kms_key_id: Some("key".into()),
        });
        assert_eq!(image_replication(&s), vec![]);
    }

    /// A copy owned by another account through a role of it, assumed with the provider's
    /// credentials: no second key pair; the role in the cloud's form.
    #[test]
    fn an_owner_account_through_its_role() {
        let mut s = ir(ProviderKind::Aws);
        s.provider.agency = None;
        let role = |arn: &str| AssumeRoleSpec {
            role_arn: arn.into(),
            external_id: None,
        };
        s.destinations[0].account = Some(OwnerSpec {
            id: "210987654321".into(),
            credentials_secret_ref: None,
            assume_role: Some(role("arn:aws:iam::210987654321:role/imgrep")),
        });
        assert_eq!(image_replication(&s), vec![]);
        s.destinations[0].account.as_mut().unwrap().assume_role = None;
        assert_eq!(reasons(&image_replication(&s)), vec!["CredentialsRequired"]);
        s.destinations[0].account.as_mut().unwrap().assume_role = Some(role("imgrep"));
        let v = image_replication(&s);
        assert_eq!(reasons(&v), vec!["InvalidRole"]);
        assert_eq!(v[0].field, "spec.destinations[0].account.assumeRole.roleArn");
        assert!(
            v[0].message.contains("arn:aws:iam::<12-digit account>:role/<name>"),
            "{v:?}"
        );
    }

    /// Keys in a Secret are needed only where the cloud has no workload identity; a role is
    /// taken only where the cloud has roles, in its own form.
    #[test]
    fn workload_identity_and_roles() {
        for kind in [
            ProviderKind::Huawei,
            ProviderKind::Alibaba,
            ProviderKind::Aws,
            ProviderKind::Tencent,
        ] {
            let mut s = ir(kind);
            s.provider.credentials_secret_ref = None;
            let v: Vec<_> = image_replication(&s)
                .into_iter()
                .filter(|v| v.reason == "CredentialsRequired")
                .collect();
            assert_eq!(v, vec![], "{kind:?}: the pod's workload identity");
        }
        let mut s = ir(ProviderKind::Aws);
        s.provider.agency = None;
        s.provider.credentials_secret_ref = None;
        assert_eq!(image_replication(&s), vec![], "aws: the pod's workload identity");
        s.provider.assume_role = Some(AssumeRoleSpec {
            role_arn: "arn:aws:iam::123456789012:role/imgrep".into(),
            external_id: Some("team-a".into()),
        });
        assert_eq!(image_replication(&s), vec![]);
        let mut s = ir(ProviderKind::Openstack);
        s.provider.agency = None;
        s.provider.credentials_secret_ref = None;
        let v = image_replication(&s);
        assert!(reasons(&v).contains(&"CredentialsRequired"), "{v:?}");
        s.provider.credentials_secret_ref = Some(SecretRef { name: "creds".into() });
        s.provider.assume_role = Some(AssumeRoleSpec::default());
        let v: Vec<_> = image_replication(&s)
            .into_iter()
            .filter(|v| v.field == "spec.provider.assumeRole")
            .collect();
        assert_eq!(reasons(&v), vec!["FieldNotSupported"], "{v:?}");
    }

    #[test]
    fn oci_rules() {
        let mut s = ir(ProviderKind::Oci);
        s.provider.agency = None;
        s.provider.credentials_secret_ref = None;
        s.source.image_id = None;
        s.source.reference = Some("127.0.0.1:5000/team/web:1.4".into());
        assert_eq!(reasons(&image_replication(&s)), vec!["RegistryRequired"]);
        s.destinations[0].registry = Some("http://127.0.0.1:5001".into());
        assert_eq!(image_replication(&s), vec![]);
        s.destinations[0].name = Some("Mirror/Web".into());
        assert_eq!(reasons(&image_replication(&s)), vec!["InvalidName"]);
        s.destinations[0].name = None;
        s.destinations[0].registry = Some("ftp://x".into());
        assert_eq!(reasons(&image_replication(&s)), vec!["InvalidRegistry"]);
        s.destinations[0].registry = Some("http://127.0.0.1:5001".into());
        s.source.reference = Some("web:1.4".into());
        assert_eq!(reasons(&image_replication(&s)), vec!["InvalidReference"]);
        s.source.reference = Some("127.0.0.1:5000/team/web:1.4".into());
        s.source.reference = None;
        s.source.image_id = Some("x".into());
        assert_eq!(reasons(&image_replication(&s)), vec!["ReferenceRequired"]);
    }

    fn ri() -> ReplicaInstanceSpec {
        ReplicaInstanceSpec {
            primary: PrimarySpec {
                provider: ReplicaProvider::Oci,
                region: "ap-guangzhou".into(),
                registry: Some("https://gz.example.com".into()),
                instance_id: None,
                credentials_secret_ref: None,
            },
            region: "ap-shanghai".into(),
            replica: Some(ReplicaTarget {
                registry: Some("https://sh.example.com".into()),
                credentials_secret_ref: None,
            }),
            sync: SyncSpec::default(),
            deletion_policy: DeletionPolicy::Retain,
            suspend: false,
        }
    }

    #[test]
    fn replica_instance_rules() {
        assert_eq!(replica_instance(&ri()), vec![]);
        type Case = (&'static str, fn(&mut ReplicaInstanceSpec), &'static str);
        let cases: Vec<Case> = vec![
            (
                "same region",
                |s| s.region = "ap-guangzhou".into(),
                "SameRegionAsPrimary",
            ),
            (
                "cross border",
                |s| s.region = "ap-singapore".into(),
                "CrossBorderReplication",
            ),
            (
                "replica is primary",
                |s| s.replica.as_mut().unwrap().registry = Some("https://gz.example.com/".into()),
                "ReplicaIsPrimary",
            ),
            ("no replica", |s| s.replica = None, "RegistryRequired"),
            ("no primary registry", |s| s.primary.registry = None, "RegistryRequired"),
            (
                "bad interval",
                |s| s.sync.interval = "10 minutes".into(),
                "InvalidInterval",
            ),
            ("short interval", |s| s.sync.interval = "5s".into(), "InvalidInterval"),
            (
                "transfers",
                |s| s.sync.max_concurrent_transfers = 65,
                "InvalidConcurrency",
            ),
            (
                "bandwidth",
                |s| s.sync.bandwidth_limit = Some("fast".into()),
                "InvalidBandwidthLimit",
            ),
            (
                "filter",
                |s| {
                    s.sync.filters = vec![SyncFilter {
                        repositories: vec!["".into()],
                        ..Default::default()
                    }]
                },
                "InvalidFilter",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut s = ri();
            mutate(&mut s);
            assert_eq!(reasons(&replica_instance(&s)), vec![want], "{name}");
        }
    }

    #[test]
    fn tencent_rules() {
        let mut s = ri();
        s.primary.provider = ReplicaProvider::Tencent;
        s.primary.registry = None;
        s.replica = None;
        assert_eq!(reasons(&replica_instance(&s)), vec!["InstanceIdRequired"]);
        s.primary.instance_id = Some("tcr-1".into());
        assert_eq!(replica_instance(&s), vec![]);
        s.primary.region = "ap-hongkong".into();
        s.region = "ap-taipei".into();
        assert_eq!(reasons(&replica_instance(&s)), vec!["RegionNotSupported"]);
    }

    #[test]
    fn durations_and_quantities() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_quantity("200Mi"), Some(200 << 20));
        assert_eq!(parse_quantity("50M"), Some(50_000_000));
        assert_eq!(parse_quantity("1.5G"), None);
    }
}
