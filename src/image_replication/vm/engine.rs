//! The thin shell around the pure VM planner, shared by the controller and `replicate -f`:
//! observe (describe the source, find copies by token, poll what is due, check for drift), plan,
//! take quota slots, then act (start or cancel copies) once the status is written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{info, warn};

use super::follow;
use super::plan::{self as vplan, DestObs, Observed, VmPlan};
use super::quota::{Quota, Wake};
use super::rules::{self, Limits};
use super::share::{self, ShareCall, ShareObs};
use super::{
    Account, CopyHandle, CopyRequest, ImageAt, ImageInfo, ImageSelector, ImageService, Member, ProviderError,
    TaskPhase, TaskState,
};
use crate::api::key_of;
use crate::api::v1alpha1::{
    DeletionPolicy, DestinationPhase, DestinationStatus, ImageReplication, ImageReplicationStatus, PreviousCopy,
    SharePhase,
};
use crate::error::Blocked;
use crate::plan::Gate;
use crate::server::metrics::Metrics;

/// The first poll of a new copy comes this soon.
const POLL_FIRST: Duration = Duration::from_secs(1);

/// Tuning of the engine.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
    pub max_attempts: i32,
    /// How often an Available destination is checked for drift.
    pub resync: Duration,
    /// Polling starts at `poll_min` and doubles to `poll_max` while nothing changes.
    pub poll_min: Duration,
    pub poll_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_attempts: crate::plan::MAX_ATTEMPTS,
            resync: Duration::from_secs(300),
            poll_min: Duration::from_secs(5),
            poll_max: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct Memory {
    source: Option<ImageInfo>,
    /// When the source was last described (the reconcile clock's Unix seconds).
    source_at: Option<i64>,
    /// region -> (next poll, interval, bytes at the last poll)
    polls: HashMap<String, (Instant, Duration, Option<i64>)>,
    drift: HashMap<String, Instant>,
    started: HashMap<String, Result<CopyHandle, ProviderError>>,
    cancelled: HashSet<String>,
    phases: Vec<(&'static str, DestinationPhase)>,
    bytes: HashMap<String, i64>,
    /// The cloud refused this Secret: no request with it before `until` unless it changes.
    auth: Option<AuthHold>,
    /// region -> when its image's members were last read.
    share_checked: HashMap<String, Instant>,
    /// region -> account -> the share call of the last act that failed.
    share_failed: HashMap<String, HashMap<String, (ShareCall, ProviderError)>>,
    /// Destinations removed from the spec whose copy was deleted (the next plan forgets them).
    pruned: HashSet<String>,
    /// Destinations owned by another account whose source share was withdrawn by this process.
    source_unshared: HashSet<String>,
    /// (provider, state) of every share, for the gauge.
    share_states: Vec<(&'static str, SharePhase)>,
    /// `source.follow`: when the source was last looked up, and what was found.
    follow: Option<(i64, Result<ImageInfo, ProviderError>)>,
    /// Whether the object had copies in flight at its last look (its slot Leases may need
    /// letting go).
    slotted: bool,
    /// Its last plan wanted a shared slot it had not read: read them at the next look.
    ask_slots: bool,
    /// Copies of earlier sources deleted by the last act (image id -> outcome).
    retired: HashMap<String, Result<(), ProviderError>>,
    /// Copies of earlier sources marked superseded by this process.
    superseded: HashSet<String>,
}

/// An authentication failure being waited out.
struct AuthHold {
    until: Instant,
    failures: u32,
    /// Fingerprint of the Secret's data and the endpoint that were refused.
    account: String,
    /// The error, with when the next try is, as the status shows it.
    error: ProviderError,
}

pub use crate::cloud::account::auth_backoff;

/// A fingerprint of what an account sends: a changed Secret (or endpoint) is a new account.
pub(crate) fn fingerprint(a: &Account) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    // Short-lived keys change as they are renewed: the account is where they come from.
    if let Some(i) = &a.identity {
        h.update(i.as_bytes());
        h.update([1]);
    }
    for (k, v) in a.secret.iter().filter(|_| a.identity.is_none()) {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v);
        h.update([0]);
    }
    h.update(a.endpoint.as_deref().unwrap_or("").as_bytes());
    crate::oci::api::hex(&h.finalize())
}

/// The VM copy engine.
pub struct VmEngine {
    pub settings: Settings,
    pub quota: Arc<Quota>,
    wake: Wake,
    memory: Mutex<HashMap<String, Memory>>,
    metrics: Option<Metrics>,
    freshness: crate::server::metrics::Freshness,
    /// Copy slots shared with the installation's other processes (`None`: this process's
    /// quota alone).
    pub slots: Option<Arc<dyn super::slots::Slots>>,
    /// Short-lived keys of workload identities and assumed roles, shared by every object.
    pub sessions: crate::cloud::identity::Sessions,
}

/// The accounts other than the provider's, by what their credentials are known by: the owners of
/// destinations with `account`, the members of `acceptWith`.
pub type OtherAccounts = HashMap<String, Result<Account, ProviderError>>;

/// The account a destination's copy belongs to: its `account`'s (read from its Secret into
/// `others`), else the provider's.
fn account_for<'a>(
    obj: &ImageReplication,
    region: &str,
    main: &'a Account,
    others: &'a OtherAccounts,
) -> Result<&'a Account, ProviderError> {
    let Some(owner) = owner_of(obj, region) else {
        return Ok(main);
    };
    let name = owner.credentials_key();
    match others.get(&name) {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(ProviderError {
            message: format!("account {}: {}", owner.id, e.message),
            ..e.clone()
        }),
        None => Err(ProviderError::transient(format!(
            "account {} ({name}) was not read",
            owner.id
        ))),
    }
}

/// The spec of the destination in `region`, if the spec still has it.
fn dest_of<'a>(obj: &'a ImageReplication, region: &str) -> Option<&'a crate::api::v1alpha1::DestinationSpec> {
    obj.spec.destinations.iter().find(|d| d.region == region)
}

/// The destination's `account`, where it has one.
fn owner_of<'a>(obj: &'a ImageReplication, region: &str) -> Option<&'a crate::api::v1alpha1::OwnerSpec> {
    dest_of(obj, region).and_then(|d| d.account.as_ref())
}

/// What became of a copy in flight when its object goes.
enum Stopped {
    Cancelled,
    /// Finished (or not found): its image, if it has one, for the deletion policy.
    Finished(Option<String>),
}

/// Delete a destination's copy (`deletionPolicy: Delete`, on delete or when the destination
/// left the spec): every share this object made is withdrawn first, then the image — never the
/// source (`source`: its region and id), which a same-region destination shares in place. The
/// region counts too: where the cloud replicates the source itself, a copy has its id. Returns
/// the accounts withdrawn.
async fn delete_copy(
    provider: &dyn ImageService,
    acct: &Account,
    at: &ImageAt,
    shared_with: &[String],
    source: Option<(&str, &str)>,
) -> Result<Vec<String>, Blocked> {
    let (region, project, id) = (at.region.as_str(), at.project.as_deref(), at.image_id.as_str());
    let mut withdrawn = Vec::new();
    for account in shared_with {
        provider
            .unshare(acct, at, account)
            .await
            .map_err(|e| Blocked::at(region, format!("withdrawing the share with {account}: {e}")))?;
        withdrawn.push(account.clone());
    }
    if source != Some((region, id)) {
        provider
            .delete_image(acct, region, project, id)
            .await
            .map_err(|e| Blocked::at(region, format!("deleting image {id}: {e}")))?;
    }
    Ok(withdrawn)
}

/// Whether a destination that stays (not in `pruned`) has image `id` shared with `account`.
fn still_shared(dests: &[DestinationStatus], pruned: &[String], id: &str, account: &str) -> bool {
    dests.iter().any(|d| {
        !pruned.contains(&d.region)
            && d.image_id.as_deref() == Some(id)
            && d.shares.iter().any(|x| x.account == account)
    })
}

/// The source image (`id`, as the status says) where it is: the source region.
fn the_source<'a>(obj: &'a ImageReplication, id: Option<&'a str>) -> Option<(&'a str, &'a str)> {
    id.map(|i| (obj.spec.source.region.as_str(), i))
}

/// A destination's copy as a share or delete call names it, and the accounts it is shared with.
fn copy_at(obj: &ImageReplication, s: &DestinationStatus, id: &str) -> (ImageAt, Vec<String>) {
    let at = ImageAt {
        region: s.region.clone(),
        project: project_of(obj, &s.region).map(String::from),
        image_id: id.to_string(),
    };
    (at, s.shares.iter().map(|x| x.account.clone()).collect())
}

/// An earlier source's copy as a delete call names it.
fn previous_at(obj: &ImageReplication, c: &PreviousCopy) -> ImageAt {
    ImageAt {
        region: c.region.clone(),
        project: project_of(obj, &c.region).map(String::from),
        image_id: c.image_id.clone(),
    }
}

/// On delete: the copies of earlier sources go under `deletionPolicy: Delete` (their shares
/// withdrawn first, with the owning account) and stay under `Retain`; failed copies go under
/// either. Returns (deleted, kept), labelled.
async fn cleanup_previous(
    obj: &ImageReplication,
    st: &ImageReplicationStatus,
    provider: &dyn ImageService,
    main: &Account,
    others: &OtherAccounts,
) -> Result<(Vec<String>, Vec<String>), Blocked> {
    let source_id = st.source.as_ref().and_then(|x| x.image_id.as_deref());
    let (mut deleted, mut kept) = (Vec::new(), Vec::new());
    for c in &st.previous {
        let what = if c.failed { "a failed copy" } else { "an earlier copy" };
        let label = format!("{} ({}, {what})", c.region, c.image_id);
        if c.failed || obj.spec.deletion_policy == DeletionPolicy::Delete {
            let acct = account_for(obj, &c.region, main, others).map_err(|e| Blocked::at(&c.region, e.message))?;
            delete_copy(
                provider,
                acct,
                &previous_at(obj, c),
                &c.shared_with,
                the_source(obj, source_id),
            )
            .await?;
            deleted.push(label);
        } else {
            kept.push(label);
        }
    }
    Ok((deleted, kept))
}

/// Where the source image is, as a share call names it.
fn source_at(obj: &ImageReplication, source_id: &str) -> ImageAt {
    ImageAt {
        region: obj.spec.source.region.clone(),
        project: None,
        image_id: source_id.to_string(),
    }
}

/// The account a copy's quota is counted against: provider, Secret and endpoint.
pub fn account_key(obj: &ImageReplication) -> String {
    let p = &obj.spec.provider;
    format!(
        "{}|{}|{}|{}",
        p.kind.as_str(),
        obj.metadata.namespace.clone().unwrap_or_default(),
        p.credentials_secret_ref.as_ref().map(|s| s.name.as_str()).unwrap_or(""),
        p.endpoint.as_deref().unwrap_or("")
    )
}

fn selector(obj: &ImageReplication) -> Option<ImageSelector> {
    let s = &obj.spec.source;
    s.image_id
        .clone()
        .map(ImageSelector::Id)
        .or_else(|| s.image_name.clone().map(ImageSelector::Name))
}

/// The copy request of a destination: the spec's settings, the token and start time of the
/// destination's status (None without a token: nothing was started; None for a kind that is
/// not a cloud).
pub fn request_for(obj: &ImageReplication, s: &DestinationStatus, source: &ImageInfo) -> Option<CopyRequest> {
    let spec = &obj.spec;
    let d = spec.destinations.iter().find(|d| d.region == s.region)?;
    let cloud = super::providers::cloud(spec.provider.kind)?;
    Some(CopyRequest {
        source_region: spec.source.region.clone(),
        source: source.clone(),
        region: s.region.clone(),
        name: rules::destination_name(cloud, spec, d, source),
        description: d.description.clone(),
        tags: d.tags.clone(),
        project: d.project.clone(),
        kms_key_id: d.encryption.as_ref().and_then(|e| e.kms_key_id.clone()),
        resource_group_id: d.resource_group_id.clone(),
        vault_id: d.vault_id.clone(),
        replica_count: d.replica_count,
        storage_account_type: d.storage_account_type.clone(),
        token: s.client_token.clone()?,
        started_at: s.started_at.as_ref().map(|t| t.0.as_second()),
    })
}

/// What the status remembers of the source, for polls when it was not described this time.
fn source_from_status(obj: &ImageReplication) -> Option<ImageInfo> {
    let s = obj.status.as_ref()?.source.as_ref()?;
    Some(ImageInfo {
        id: s.image_id.clone()?,
        name: s.name.clone().unwrap_or_default(),
        size_bytes: s.size_bytes.map(|b| b as u64),
        disk_format: s.format.clone(),
        digest: s.digest.clone(),
        ..Default::default()
    })
}

/// The destination's project, where the spec names one (huawei).
fn project_of<'a>(obj: &'a ImageReplication, region: &str) -> Option<&'a str> {
    dest_of(obj, region).and_then(|d| d.project.as_deref())
}

/// The account is needed for a cleanup only when there is something to cancel or delete (a
/// Secret deleted together with the object must not hold the object forever).
fn cleanup_needs_account(obj: &ImageReplication, st: &ImageReplicationStatus) -> bool {
    let deletes = obj.spec.deletion_policy == DeletionPolicy::Delete;
    (deletes && !st.previous.is_empty())
        || st.previous.iter().any(|c| c.failed)
        || st.destinations.iter().any(|d| {
            vplan::in_flight(d.phase) || (deletes && (d.phase == DestinationPhase::Available || !d.shares.is_empty()))
        })
}

/// Whether the source is described this time: the gate is open and the spec changed or a
/// destination is not Available yet.
fn needs_source(obj: &ImageReplication, st: &ImageReplicationStatus, gate: &Gate) -> bool {
    let spec_changed = st.observed_generation != obj.metadata.generation;
    matches!(gate, Gate::Open)
        && (spec_changed
            || obj.spec.destinations.iter().any(|d| {
                st.destinations
                    .iter()
                    .find(|s| s.region == d.region)
                    .is_none_or(|s| s.phase != DestinationPhase::Available)
            }))
}

/// Whether a piece of work begins that needs the source as it is now: the spec changed, a retry
/// was asked for, or a destination is to be copied (anew or again after a failure).
fn new_work(obj: &ImageReplication, st: &ImageReplicationStatus) -> bool {
    st.observed_generation != obj.metadata.generation
        || vplan::retry_requested(obj).is_some()
        || obj.spec.destinations.iter().any(|d| {
            st.destinations
                .iter()
                .find(|s| s.region == d.region)
                .is_none_or(|s| matches!(s.phase, DestinationPhase::Pending | DestinationPhase::Failed))
        })
}

/// At most this many copies in flight for the object's account.
fn limit_of(obj: &ImageReplication, provider: &dyn ImageService) -> i32 {
    obj.spec
        .provider
        .max_concurrent_copies
        .unwrap_or_else(|| provider.default_max_concurrent())
}

/// How the provider's cloud lists new copies (its facts).
fn listing(provider: &dyn ImageService) -> vplan::Listing {
    vplan::Listing {
        late: provider.lists_late(),
        idempotent_start: provider.start_idempotent(),
    }
}

fn handle_of(s: &DestinationStatus) -> CopyHandle {
    CopyHandle {
        task_id: s.task_id.clone(),
        image_id: s.image_id.clone(),
    }
}

impl VmEngine {
    pub fn new(settings: Settings, wake: Wake, metrics: Option<Metrics>) -> Self {
        Self {
            settings,
            quota: Arc::new(Quota::new(wake.clone())),
            wake,
            memory: Mutex::new(HashMap::new()),
            metrics,
            freshness: Default::default(),
            slots: None,
            sessions: Default::default(),
        }
    }

    /// Count an exchange for short-lived keys (`ok`, `refused`, `failed`).
    pub fn exchanged(&self, kind: crate::api::v1alpha1::ProviderKind, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.credential_exchanges
                .with_label_values(&[kind.as_str(), outcome])
                .inc();
        }
    }

    fn with_mem<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut m = self.memory.lock().expect("vm memory");
        f(m.entry(key.to_string()).or_default())
    }

    fn poll_due(&self, key: &str, region: &str) -> bool {
        self.with_mem(key, |m| {
            m.polls.get(region).is_none_or(|(next, _, _)| *next <= Instant::now())
        })
    }

    /// Schedule the next poll of a copy: a new copy is polled after 1 s (or `poll_min` if
    /// shorter), then the interval doubles at every poll up to `poll_max`, whether the copy
    /// moved or not: the backoff follows the copy's age, so a copy of age T costs about
    /// log2(T) + T / `poll_max` polls (progress that rises at every poll never holds the
    /// interval down).
    fn polled(&self, key: &str, region: &str, bytes: Option<i64>) {
        let (min, max) = (self.settings.poll_min, self.settings.poll_max);
        let first = POLL_FIRST.min(min);
        self.with_mem(key, |m| {
            let fresh = !m.polls.contains_key(region);
            let e = m
                .polls
                .entry(region.to_string())
                .or_insert((Instant::now(), first, None));
            e.1 = if fresh { first } else { (e.1 * 2).min(max) };
            e.2 = bytes;
            e.0 = Instant::now() + e.1;
        });
    }

    /// Record copies in flight at start-up so the quota counts them before anything new starts.
    pub fn seed(&self, obj: &ImageReplication) {
        let running: Vec<String> = obj
            .status
            .iter()
            .flat_map(|s| s.destinations.iter())
            .filter(|d| vplan::in_flight(d.phase))
            .map(|d| d.region.clone())
            .collect();
        if !running.is_empty() {
            self.quota.seed(&account_key(obj), &key_of(obj), &running);
        }
    }

    fn time<T>(&self, p: &dyn ImageService, op: &'static str, started: Instant, r: &Result<T, ProviderError>) {
        if let Some(m) = &self.metrics {
            let outcome = match r {
                Ok(_) => "ok",
                Err(e) if e.not_found => "not_found",
                Err(e) if e.retryable => "transient",
                Err(_) => "error",
            };
            m.provider_request_duration
                .with_label_values(&[p.kind().as_str(), op, outcome])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Remember refused credentials: the next try waits `auth_backoff`; the error says which
    /// Secret, when, and that a change to the Secret is tried at once.
    fn hold_auth(&self, obj: &ImageReplication, key: &str, a: &Account, e: ProviderError, now: &Time) -> ProviderError {
        let secret = obj
            .spec
            .provider
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        self.with_mem(key, |m| {
            let failures = m.auth.as_ref().map_or(0, |h| h.failures) + 1;
            let wait = auth_backoff(failures);
            let at =
                k8s_openapi::jiff::Timestamp::from_second(now.0.as_second() + wait.as_secs() as i64).unwrap_or(now.0);
            let error = ProviderError {
                message: format!(
                    "{}; {} were refused ({failures} time(s)): tried again at {at} or as soon as {} changes",
                    e.message,
                    a.credentials(&secret),
                    if a.identity.is_some() { "the spec" } else { "the Secret" },
                ),
                ..e
            };
            m.auth = Some(AuthHold {
                until: Instant::now() + wait,
                failures,
                account: fingerprint(a),
                error: error.clone(),
            });
            error
        })
    }

    /// Observe, plan and claim one object (the engine's tests; the controller and
    /// `replicate -f` run the steps through the ImageReplication provider).
    #[cfg(test)]
    pub async fn reconcile(
        &self,
        obj: &ImageReplication,
        gate: &Gate,
        provider: &dyn ImageService,
        acct: Result<Account, ProviderError>,
        now: &Time,
    ) -> VmPlan {
        loop {
            let snap = self
                .observe(obj, gate, provider, acct.clone(), &OtherAccounts::new(), now)
                .await;
            let p = vplan::plan(obj, gate, &snap, now);
            if self.claim(obj, provider, &snap, &p).await {
                return p;
            }
        }
    }

    /// The object left this process (deleted, or moved to another shard): its quota slots go
    /// back to the account's queue here, and what was remembered of it is forgotten. Its copies
    /// in flight go on in the cloud.
    pub fn release(&self, obj: &ImageReplication) {
        let key = key_of(obj);
        self.quota.release(&key);
        self.memory.lock().expect("vm memory").remove(&key);
        if let Some(m) = &self.metrics {
            self.freshness.forget(m, &key);
            self.refresh_gauges(obj.spec.provider.kind.as_str());
        }
    }

    /// Observe one object: all its I/O (describe the source when needed, find copies by
    /// token, poll what is due, check for drift), the quota's answers to the destinations that
    /// ask for a slot, and when the next polls and drift checks are due. `acct` is the
    /// account, or why it could not be read.
    pub async fn observe(
        &self,
        obj: &ImageReplication,
        gate: &Gate,
        provider: &dyn ImageService,
        acct: Result<Account, ProviderError>,
        others: &OtherAccounts,
        now: &Time,
    ) -> vplan::Snapshot {
        let key = key_of(obj);
        let st = obj.status.clone().unwrap_or_default();
        let mut obs = Observed::default();
        let acct = match acct {
            Ok(a) => Some(a),
            Err(e) => {
                obs.source = Some(Err(e));
                None
            }
        };
        let acct = match self.auth_held(&key, acct.as_ref()) {
            Some(e) => {
                obs.source = Some(Err(e));
                None
            }
            None => acct,
        };
        let mut check_in = None;
        if follow::following(&obj.spec.source) {
            if let (Some(a), Gate::Open) = (&acct, gate) {
                let (found, next) = self.resolve(obj, &key, provider, a, now).await;
                obs.source = Some(found);
                check_in = Some(next);
            }
        } else if let (Some(a), true, Some(sel)) = (&acct, needs_source(obj, &st, gate), selector(obj)) {
            // Described once per piece of work: copies in flight or queued go on with what was
            // read when they began, and it is read again once it is a drift period old.
            let known = self
                .with_mem(&key, |m| m.source.clone().zip(m.source_at))
                .filter(|(_, at)| {
                    !new_work(obj, &st) && now.0.as_second() - at < self.settings.resync.as_secs() as i64
                });
            obs.source = Some(match known {
                Some((i, _)) => Ok(i),
                None => self.describe(obj, &key, provider, a, &sel, now).await,
            });
        }
        obs.can_cancel = provider.can_cancel();
        obs.listing = listing(provider);
        obs.retired = self.with_mem(&key, |m| std::mem::take(&mut m.retired));
        obs.source_unshared = self.with_mem(&key, |m| m.source_unshared.clone());
        obs.marks_superseded = provider.marks_superseded();
        obs.superseded = self.with_mem(&key, |m| m.superseded.clone());
        let source = match &obs.source {
            Some(Ok(i)) => Some(i.clone()),
            _ => self
                .with_mem(&key, |m| m.source.clone())
                .or_else(|| source_from_status(obj)),
        };
        if let Some(main) = &acct {
            // Members read once per image: where the cloud replicates the source itself (Azure),
            // every destination's copy is the same image.
            let mut members = HashMap::new();
            for s in &st.destinations {
                let a = match account_for(obj, &s.region, main, others) {
                    Ok(a) => a,
                    Err(e) => {
                        obs.dests.insert(s.region.clone(), DestObs::Error(e));
                        continue;
                    }
                };
                let o = self.observe_dest(obj, &key, s, provider, a, source.as_ref()).await;
                obs.dests.insert(s.region.clone(), o);
                if let Some(o) = self.observe_shares(obj, s, provider, a, now, &mut members).await {
                    obs.shares.insert(s.region.clone(), o);
                }
            }
        }
        let account = account_key(obj);
        let limit = limit_of(obj, provider);
        let slots = self.read_slots(obj, &key, &st, &obs, &account, limit).await;
        let mut snap = vplan::Snapshot {
            observed: obs,
            ledger: self.quota.view(&account),
            limit,
            slots,
            check_in,
            resync: self.settings.resync,
            limits: self.settings.limits.clone(),
            max_attempts: self.settings.max_attempts,
            ..Default::default()
        };
        self.schedule(&key, &mut snap);
        snap
    }

    /// The account's shared copy slots (shards), read only by an object that may hold or want
    /// one: a copy in flight (as its status says, or at its last look), a destination not
    /// Available (or failed for good), a destination new to the spec, a source that moved on, a
    /// copy found gone, or a plan that wanted a slot it had not read. At rest, nothing is read.
    async fn read_slots(
        &self,
        obj: &ImageReplication,
        key: &str,
        st: &ImageReplicationStatus,
        obs: &Observed,
        account: &str,
        limit: i32,
    ) -> vplan::SharedSlots {
        let Some(slots) = &self.slots else {
            return vplan::SharedSlots::None;
        };
        let settled = |d: &DestinationStatus| {
            d.phase == DestinationPhase::Available
                || (d.phase == DestinationPhase::Failed && d.attempts >= self.settings.max_attempts)
        };
        let moved =
            matches!(&obs.source, Some(Ok(i)) if st.source.as_ref().and_then(|s| s.image_id.as_ref()) != Some(&i.id));
        let may = self.with_mem(key, |m| std::mem::take(&mut m.ask_slots) || m.slotted)
            || !st.destinations.iter().all(settled)
            || obj.spec.destinations.len() != st.destinations.len()
            || moved
            || obs.dests.values().any(|o| matches!(o, DestObs::Gone));
        if !may {
            return vplan::SharedSlots::Unread;
        }
        match slots.read(account, limit).await {
            Ok(v) => vplan::SharedSlots::Read(v),
            Err(e) => {
                warn!(error = %e, "reading the copy slots failed; copies wait");
                vplan::SharedSlots::Unread
            }
        }
    }

    /// Before the plan's status is written: take what it granted from the account's ledger
    /// and, with shards, the shared slots (conditional writes). False when another object or
    /// process took them first: nothing is written, and the object plans again at once.
    pub async fn claim(
        &self,
        obj: &ImageReplication,
        provider: &dyn ImageService,
        snap: &vplan::Snapshot,
        plan: &VmPlan,
    ) -> bool {
        let key = key_of(obj);
        let account = account_key(obj);
        let c = &plan.claim;
        if !self
            .quota
            .commit(&account, &key, snap.limit, &c.running, &c.wants, &c.granted)
        {
            return false;
        }
        for (order, region) in &c.no_slot {
            self.quota.requeue(&account, &key, region, order.clone());
            // A wait on another process's slots (not on slots this plan had not read).
            if let (Some(m), false) = (&self.metrics, c.read_slots) {
                m.copy_slot_waits.with_label_values(&[provider.kind().as_str()]).inc();
            }
        }
        self.with_mem(&key, |m| {
            m.slotted = !plan.running.is_empty();
            m.ask_slots = c.read_slots;
        });
        let (Some(slots), vplan::SharedSlots::Read(view), Some(sp)) = (&self.slots, &snap.slots, &c.slots) else {
            return true;
        };
        let lost = slots.take(&account, view, sp).await;
        let mut held = true;
        for (order, region) in c.wants.iter().filter(|(_, r)| sp.granted.contains(r)) {
            if lost.contains(&super::slots::copy_id(&key, region)) {
                self.quota.requeue(&account, &key, region, order.clone());
                held = false;
            }
        }
        if !plan.running.is_empty() || !sp.hold.is_empty() {
            self.with_mem(&key, |m| m.slotted = true);
        }
        held
    }

    /// Describe the source image; a refusal of the credentials is held (see `hold_auth`).
    async fn describe(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        a: &Account,
        sel: &ImageSelector,
        now: &Time,
    ) -> Result<ImageInfo, ProviderError> {
        let t = Instant::now();
        let r = provider.describe(a, &obj.spec.source.region, sel).await;
        self.time(provider, "describe", t, &r);
        let r = match r {
            Err(e) if e.auth => Err(self.hold_auth(obj, key, a, e, now)),
            other => other,
        };
        if let Ok(i) = &r {
            self.with_mem(key, |m| {
                m.source = Some(i.clone());
                m.source_at = Some(now.0.as_second());
                m.auth = None;
            });
        }
        r
    }

    /// `source.follow`: the newest image matching the pattern, looked up when the last look is
    /// `checkInterval` old (or the spec changed), else what the last look found; and how long
    /// until the next look.
    async fn resolve(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        a: &Account,
        now: &Time,
    ) -> (Result<ImageInfo, ProviderError>, Duration) {
        let src = &obj.spec.source;
        let every = follow::check_interval(src).unwrap_or(follow::DEFAULT_CHECK);
        // A changed spec, or the retry annotation (a pipeline that just pushed an image and
        // does not want to wait), looks again at once.
        let changed = obj.status.as_ref().and_then(|s| s.observed_generation) != obj.metadata.generation
            || vplan::retry_requested(obj).is_some();
        // Timed by the reconcile's clock (`now`), as the plan is.
        let secs = now.0.as_second();
        let age = |at: i64| Duration::from_secs((secs - at).max(0) as u64);
        let last = self.with_mem(key, |m| m.follow.clone());
        if let Some((at, found)) = last.filter(|(at, _)| !changed && age(*at) < every) {
            return (found, every.saturating_sub(age(at)));
        }
        let pattern = src.image_name.clone().unwrap_or_default();
        let t = Instant::now();
        let listed = provider.candidates(a, &src.region, &pattern).await;
        self.time(provider, "candidates", t, &listed);
        let follows = |i: &ImageInfo| provider.follows(&pattern, i);
        let found = match listed.and_then(|l| follow::newest(&pattern, &src.region, l, follows)) {
            // The same image as last time: what was described then (one call per look, not two).
            Ok(newest) => match self.with_mem(key, |m| m.source.clone()).filter(|s| s.id == newest.id) {
                Some(known) => Ok(known),
                None => {
                    let sel = ImageSelector::Id(newest.id.clone());
                    self.describe(obj, key, provider, a, &sel, now)
                        .await
                        .map(|i| ImageInfo {
                            created_at: i.created_at.or(newest.created_at),
                            ..i
                        })
                }
            },
            Err(e) if e.auth => Err(self.hold_auth(obj, key, a, e, now)),
            Err(e) => Err(e),
        };
        self.with_mem(key, |m| m.follow = Some((secs, found.clone())));
        (found, every)
    }

    /// How long until each destination's next poll and drift check.
    fn schedule(&self, key: &str, snap: &mut vplan::Snapshot) {
        let now_i = Instant::now();
        self.with_mem(key, |m| {
            for (region, p) in &m.polls {
                snap.poll_in
                    .insert(region.clone(), p.0.saturating_duration_since(now_i));
            }
            for (region, last) in &m.drift {
                let due = (*last + self.settings.resync).saturating_duration_since(now_i);
                snap.drift_in.insert(region.clone(), due);
            }
        });
    }

    /// The refusal to report while credentials the cloud refused wait out their backoff:
    /// they are not tried again before it ends, unless the Secret changed (read again every
    /// reconcile), then at once.
    fn auth_held(&self, key: &str, acct: Option<&Account>) -> Option<ProviderError> {
        let fp = fingerprint(acct?);
        self.with_mem(key, |m| {
            if m.auth.as_ref().is_some_and(|h| h.account != fp) {
                m.auth = None; // a new Secret: forget the old refusals
            }
            m.auth
                .as_ref()
                .filter(|h| h.until > Instant::now())
                .map(|h| h.error.clone())
        })
    }

    /// The shares of one destination: the failures of the last act's share calls, and the
    /// image's members when they are due (soon while a share is not in place, once per drift
    /// check when all are).
    async fn observe_shares(
        &self,
        obj: &ImageReplication,
        s: &DestinationStatus,
        provider: &dyn ImageService,
        acct: &Account,
        now: &Time,
        read: &mut HashMap<String, Result<Vec<Member>, ProviderError>>,
    ) -> Option<ShareObs> {
        let key = &key_of(obj);
        let region = s.region.as_str();
        let failed = self
            .with_mem(key, |m| m.share_failed.remove(region))
            .unwrap_or_default();
        let wanted: Vec<&str> = dest_of(obj, region)
            .map(|d| d.share_with.iter().map(|w| w.account.as_str()).collect())
            .unwrap_or_default();
        let image = s.image_id.clone().filter(|_| s.phase == DestinationPhase::Available);
        let Some(image_id) = image.filter(|_| !wanted.is_empty() || !s.shares.is_empty()) else {
            return (!failed.is_empty()).then_some(ShareObs { members: None, failed });
        };
        // Read every `poll_min` while a call of ours is under way; every minute at most while
        // only members who accept in their own account are awaited (the operator has nothing to
        // do) or failed shares wait out their retry backoff (the retry reads them again); once
        // per drift check when every share is in place or failed for good.
        let max = self.settings.max_attempts;
        let listed = s.shares.len() == wanted.len() && s.shares.iter().all(|x| wanted.contains(&x.account.as_str()));
        let settled = listed && s.shares.iter().all(|x| share::settled(x, max));
        let waiting = listed
            && s.shares
                .iter()
                .all(|x| share::settled(x, max) || share::backing_off(x, max, now));
        let awaiting = s.shares.iter().any(|x| !share::done(x));
        let every = match (settled, awaiting) {
            (true, false) => self.settings.resync,
            (true, true) => self.settings.resync.min(share::MEMBER_WAIT),
            (false, _) if waiting => self.settings.resync.min(share::MEMBER_WAIT),
            (false, _) => self.settings.poll_min,
        };
        let due = self.with_mem(key, |m| {
            m.share_checked.get(region).is_none_or(|t| t.elapsed() >= every)
        });
        let mut o = ShareObs { members: None, failed };
        if due {
            let at = ImageAt {
                region: region.to_string(),
                project: project_of(obj, region).map(String::from),
                image_id,
            };
            let r = match read.get(&at.image_id) {
                Some(r) => r.clone(),
                None => {
                    let t = Instant::now();
                    let r = provider.members(acct, &at).await;
                    self.time(provider, "members", t, &r);
                    read.insert(at.image_id.clone(), r.clone());
                    r
                }
            };
            self.with_mem(key, |m| m.share_checked.insert(region.to_string(), Instant::now()));
            o.members = Some(r);
        }
        Some(o)
    }

    async fn observe_dest(
        &self,
        obj: &ImageReplication,
        key: &str,
        s: &DestinationStatus,
        provider: &dyn ImageService,
        acct: &Account,
        source: Option<&ImageInfo>,
    ) -> DestObs {
        let region = s.region.as_str();
        if self.with_mem(key, |m| m.pruned.remove(region)) {
            return DestObs::Pruned;
        }
        let token = s.client_token.clone().unwrap_or_default();
        let req = source.and_then(|src| request_for(obj, s, src));
        let req_ref = &req;
        let poll = |handle: CopyHandle| async move {
            let Some(req) = req_ref else { return DestObs::Unchecked };
            let t = Instant::now();
            let r = provider.poll(acct, req, &handle).await;
            self.time(provider, "poll", t, &r);
            match r {
                Ok(state) => {
                    self.polled(key, region, state.bytes_done.map(|b| b as i64));
                    DestObs::Task { handle, state }
                }
                Err(e) => {
                    self.polled(key, region, None);
                    DestObs::Error(e)
                }
            }
        };
        match s.phase {
            DestinationPhase::Starting => {
                match self.with_mem(key, |m| m.started.remove(region)) {
                    // Just started: its handle goes into the status now, and the first poll
                    // comes on the poll schedule (a copy polled at once is often not listed
                    // yet, and the call is wasted).
                    Some(Ok(handle)) => {
                        self.polled(key, region, None);
                        let total = req.as_ref().and_then(|r| r.source.size_bytes);
                        let state = TaskState::running(handle.image_id.clone(), total);
                        return DestObs::Task { handle, state };
                    }
                    Some(Err(e)) => return DestObs::StartFailed(e),
                    None => {}
                }
                if token.is_empty() {
                    return DestObs::NotStarted;
                }
                // Looked for on the poll schedule: a copy the cloud does not list yet is not
                // looked for at every reconcile.
                if !self.poll_due(key, region) {
                    return DestObs::Unchecked;
                }
                let Some(req) = &req else { return DestObs::Unchecked };
                let t = Instant::now();
                let r = provider.find_copy(acct, req).await;
                self.time(provider, "find_copy", t, &r);
                match r {
                    Ok(Some(h)) => {
                        info!(region, token, "found the copy started with this token; resuming it");
                        poll(h).await
                    }
                    Ok(None) => {
                        self.polled(key, region, None);
                        DestObs::NotStarted
                    }
                    Err(e) => DestObs::Error(e),
                }
            }
            DestinationPhase::Cancelling if self.with_mem(key, |m| m.cancelled.remove(region)) => DestObs::Cancelled,
            DestinationPhase::Copying | DestinationPhase::Cancelling => {
                if self.poll_due(key, region) {
                    poll(handle_of(s)).await
                } else {
                    DestObs::Unchecked
                }
            }
            DestinationPhase::Available => match &s.image_id {
                Some(id) => self.drift_check(obj, key, region, id, provider, acct).await,
                None => DestObs::Unchecked,
            },
            _ => DestObs::Unchecked,
        }
    }

    /// An Available copy's drift check, when due (once per resync period per region): is the
    /// image still there? The source itself (shared in place) is described, not checked.
    async fn drift_check(
        &self,
        obj: &ImageReplication,
        key: &str,
        region: &str,
        id: &str,
        provider: &dyn ImageService,
        acct: &Account,
    ) -> DestObs {
        let in_place = dest_of(obj, region).is_some_and(|d| d.shares_in_place(&obj.spec.source.region));
        if in_place {
            return DestObs::Unchecked; // the source itself: described, not copied
        }
        let due = self.with_mem(key, |m| {
            let last = *m.drift.entry(region.to_string()).or_insert_with(Instant::now);
            last + self.settings.resync <= Instant::now()
        });
        if !due {
            return DestObs::Unchecked;
        }
        let t = Instant::now();
        let r = provider.image_exists(acct, region, project_of(obj, region), id).await;
        self.time(provider, "image_exists", t, &r);
        self.with_mem(key, |m| m.drift.insert(region.to_string(), Instant::now()));
        match r {
            Ok(true) => DestObs::Unchecked,
            Ok(false) => DestObs::Gone,
            Err(e) => {
                warn!(region, error = %e, "drift check failed");
                DestObs::Unchecked
            }
        }
    }

    fn record_metrics(&self, obj: &ImageReplication, key: &str, provider: &dyn ImageService, plan: &VmPlan) {
        let Some(m) = &self.metrics else { return };
        let kind = provider.kind().as_str();
        let old = obj.status.clone().unwrap_or_default();
        for s in &plan.status.destinations {
            let was = old.destinations.iter().find(|o| o.region == s.region);
            if s.phase == DestinationPhase::Available
                && was.is_some_and(|w| w.phase != DestinationPhase::Available)
                && let (Some(a), Some(b)) = (&s.started_at, &s.completed_at)
            {
                m.copy_duration
                    .with_label_values(&[kind])
                    .observe((b.0.as_second() - a.0.as_second()).max(0) as f64);
            }
            if let Some(b) = s.bytes_copied {
                let before = self
                    .with_mem(key, |mem| mem.bytes.insert(s.region.clone(), b))
                    .unwrap_or(0);
                if b > before {
                    m.bytes_transferred
                        .with_label_values(&[kind])
                        .inc_by((b - before) as u64);
                }
            }
        }
        let phases = plan.status.destinations.iter().map(|d| (kind, d.phase)).collect();
        let shares = plan
            .status
            .destinations
            .iter()
            .flat_map(|d| d.shares.iter().map(|x| (kind, x.state)))
            .collect();
        self.with_mem(key, |mem| {
            mem.phases = phases;
            mem.share_states = shares;
        });
        self.refresh_gauges(kind);
        self.freshness.record(m, key, kind, follow::outdated(&plan.status));
    }

    fn refresh_gauges(&self, kind: &str) {
        let Some(m) = &self.metrics else { return };
        let mut counts: HashMap<DestinationPhase, i64> = HashMap::new();
        let mut shares: HashMap<SharePhase, i64> = HashMap::new();
        for mem in self.memory.lock().expect("vm memory").values() {
            for (k, p) in &mem.phases {
                if *k == kind {
                    *counts.entry(*p).or_default() += 1;
                }
            }
            for (k, p) in &mem.share_states {
                if *k == kind {
                    *shares.entry(*p).or_default() += 1;
                }
            }
        }
        /// One gauge per state of `all`, 0 for the states nothing is in.
        fn set<S: std::hash::Hash + Eq + std::fmt::Debug>(
            g: &prometheus::IntGaugeVec,
            kind: &str,
            all: &[S],
            counts: &HashMap<S, i64>,
        ) {
            for p in all {
                g.with_label_values(&[kind, &format!("{p:?}")])
                    .set(counts.get(p).copied().unwrap_or(0));
            }
        }
        use DestinationPhase as D;
        use SharePhase as S;
        let phases = [
            D::Pending,
            D::Queued,
            D::Starting,
            D::Copying,
            D::Available,
            D::Failed,
            D::Cancelling,
            D::Cancelled,
        ];
        set(&m.vm_copies, kind, &phases, &counts);
        set(
            &m.vm_shares,
            kind,
            &[S::Pending, S::Shared, S::Accepted, S::Failed, S::Withdrawing],
            &shares,
        );
        m.copy_queue_depth.set(self.quota.waiting_total() as i64);
    }

    /// After the plan's status was written: record its metrics, start the drift clocks of
    /// Available destinations, then start and cancel what it says.
    pub async fn act(
        &self,
        obj: &ImageReplication,
        provider: &dyn ImageService,
        main: &Account,
        others: &OtherAccounts,
        plan: &VmPlan,
    ) {
        let key = key_of(obj);
        self.record_metrics(obj, &key, provider, plan);
        // An Available destination's drift clock starts when it is first planned Available.
        self.with_mem(&key, |m| {
            for s in plan.status.destinations.iter() {
                if s.phase == DestinationPhase::Available {
                    m.drift.entry(s.region.clone()).or_insert_with(Instant::now);
                }
            }
        });
        self.act_shares(obj, &key, provider, main, others, plan).await;
        self.withdraw_source_shares(obj, &key, provider, main, plan).await;
        self.prune(obj, &key, provider, main, plan).await;
        self.retire(obj, &key, provider, main, others, plan).await;
        self.supersede(obj, &key, provider, main, others, plan).await;
        if plan.start.is_empty() && plan.cancel.is_empty() {
            return;
        }
        let source = self.with_mem(&key, |m| m.source.clone());
        for region in &plan.start {
            let Some(s) = plan.status.destinations.iter().find(|d| &d.region == region) else {
                continue;
            };
            let Some(req) = source.as_ref().and_then(|src| request_for(obj, s, src)) else {
                continue;
            };
            let t = Instant::now();
            let r = match (account_for(obj, region, main, others), owner_of(obj, region)) {
                (Err(e), _) => Err(e),
                // A copy owned by another account: the source (and, on AWS, its snapshots)
                // is shared with it first, then it copies with its own credentials.
                (Ok(owner), Some(o)) => match provider.share(main, &source_at(obj, &req.source.id), &o.id).await {
                    Ok(()) => provider.start_copy(owner, &req).await,
                    Err(e) => Err(ProviderError {
                        message: format!("sharing the source with account {}: {}", o.id, e.message),
                        ..e
                    }),
                },
                (Ok(a), None) => provider.start_copy(a, &req).await,
            };
            self.time(provider, "start_copy", t, &r);
            match &r {
                Ok(h) => info!(region, token = %req.token, image = ?h.image_id, "copy started"),
                Err(e) => warn!(region, token = %req.token, error = %e, "starting the copy failed"),
            }
            self.with_mem(&key, |m| {
                m.polls.remove(region);
                m.started.insert(region.clone(), r)
            });
        }
        for region in &plan.cancel {
            let Some(s) = plan.status.destinations.iter().find(|d| &d.region == region) else {
                continue;
            };
            if !provider.can_cancel() {
                // A destination removed from the spec whose copy cannot be cancelled (IMS): the
                // copy finishes on its own, untracked; the destination is forgotten.
                if !obj.spec.destinations.iter().any(|d| &d.region == region) {
                    self.with_mem(&key, |m| m.cancelled.insert(region.clone()));
                }
                continue;
            }
            let mut h = handle_of(s);
            if h.task_id.is_none() {
                h.task_id = s.client_token.clone();
            }
            let t = Instant::now();
            let r = match account_for(obj, region, main, others) {
                Ok(a) => provider.cancel(a, region, &h).await,
                Err(e) => Err(e),
            };
            self.time(provider, "cancel", t, &r);
            match r {
                Ok(()) => {
                    info!(region, "copy cancelled");
                    self.with_mem(&key, |m| m.cancelled.insert(region.clone()));
                }
                Err(e) => warn!(region, error = %e, "cancelling the copy failed; will try again"),
            }
        }
        (self.wake)(&key);
    }

    /// Make the plan's share calls; a failure is remembered for the next observe (the plan
    /// counts it and backs off), a success makes the next observe read the members at once.
    async fn act_shares(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        main: &Account,
        others: &OtherAccounts,
        plan: &VmPlan,
    ) {
        // One call per image, account and kind: destinations whose copy is the same image
        // (Azure) plan the same call each, and share its outcome.
        let mut made: HashMap<(String, String, ShareCall), Result<(), ProviderError>> = HashMap::new();
        for w in &plan.shares {
            let at = ImageAt {
                region: w.region.clone(),
                project: project_of(obj, &w.region).map(String::from),
                image_id: w.image_id.clone(),
            };
            let (region, account) = (w.region.as_str(), w.account.as_str());
            let t = Instant::now();
            let acct = match account_for(obj, region, main, others) {
                Ok(a) => a,
                Err(_) => main,
            };
            let call = (w.image_id.clone(), w.account.clone(), w.call);
            let (op, r) = match w.call {
                _ if made.contains_key(&call) => ("same call", made[&call].clone()),
                ShareCall::Share => ("share", provider.share(acct, &at, account).await),
                ShareCall::Unshare => ("unshare", provider.unshare(acct, &at, account).await),
                ShareCall::Accept => {
                    let name = w.secret.clone().unwrap_or_default();
                    let r = match others.get(&name) {
                        Some(Ok(m)) => provider.accept(m, &at, account).await,
                        Some(Err(e)) => Err(ProviderError::transient(format!("acceptWith Secret {name}: {e}"))),
                        None => Err(ProviderError::transient(format!(
                            "acceptWith Secret {name} was not read"
                        ))),
                    };
                    ("accept", r)
                }
            };
            if let std::collections::hash_map::Entry::Vacant(e) = made.entry(call) {
                self.time(provider, op, t, &r);
                e.insert(r.clone());
            }
            match r {
                Ok(()) => info!(region, account, image = %w.image_id, op, "share call done"),
                Err(e) => {
                    warn!(region, account, image = %w.image_id, op, error = %e, "share call failed");
                    self.with_mem(key, |m| {
                        m.share_failed
                            .entry(region.to_string())
                            .or_default()
                            .insert(account.to_string(), (w.call, e))
                    });
                }
            }
            self.with_mem(key, |m| m.share_checked.remove(region));
        }
        if !plan.shares.is_empty() {
            (self.wake)(key);
        }
    }

    /// Withdraw the source's share with the owners of copies that no longer need it (the
    /// plan's `unshare_source`); a failure is retried at the next reconcile.
    async fn withdraw_source_shares(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        main: &Account,
        plan: &VmPlan,
    ) {
        let Some(source_id) = plan.status.source.as_ref().and_then(|x| x.image_id.clone()) else {
            return;
        };
        for (region, account) in &plan.unshare_source {
            match provider.unshare(main, &source_at(obj, &source_id), account).await {
                Ok(()) => {
                    info!(region = %region, account = %account, "withdrew the source's share with the copy's owner");
                    self.with_mem(key, |m| m.source_unshared.insert(region.clone()));
                }
                Err(e) => {
                    warn!(region = %region, account = %account, error = %e, "withdrawing the source's share failed; will try again")
                }
            }
        }
    }

    /// Delete the copies of destinations removed from the spec (`deletionPolicy: Delete`): their
    /// shares withdrawn first; never the source (a same-region destination shared it in place).
    /// A failure is retried at the next reconcile.
    async fn prune(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        main: &Account,
        plan: &VmPlan,
    ) {
        let source_id = plan.status.source.as_ref().and_then(|x| x.image_id.clone());
        for region in &plan.prune {
            let Some(s) = plan.status.destinations.iter().find(|d| &d.region == region) else {
                continue;
            };
            let Some(id) = s.image_id.clone() else { continue };
            let (mut at, mut shared) = copy_at(obj, s, &id);
            at.project = None;
            // A share another destination still has on the same image (where the copy is the
            // source replicated: Azure) stays.
            shared.retain(|a| !still_shared(&plan.status.destinations, &plan.prune, &id, a));
            match delete_copy(provider, main, &at, &shared, the_source(obj, source_id.as_deref())).await {
                Ok(_) => {
                    info!(region, image = %id, "deleted the copy of a destination removed from the spec");
                    self.with_mem(key, |m| m.pruned.insert(region.clone()));
                    (self.wake)(key);
                }
                // Tried again at the next reconcile (the drift check's at the latest).
                Err(e) => {
                    warn!(region, image = %id, error = %e, "deleting a removed destination's copy failed; will try again")
                }
            }
        }
    }

    /// Mark the kept copies of earlier sources superseded by their region's current copy (the
    /// plan's `supersede`), with the account that owns them; a failure is tried again at the
    /// next reconcile.
    async fn supersede(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        main: &Account,
        others: &OtherAccounts,
        plan: &VmPlan,
    ) {
        for c in &plan.supersede {
            let at = ImageAt {
                region: c.region.clone(),
                project: project_of(obj, &c.region).map(String::from),
                image_id: c.image_id.clone(),
            };
            let acct = account_for(obj, &c.region, main, others).unwrap_or(main);
            let t = Instant::now();
            let r = provider.supersede(acct, &at, &c.by).await;
            self.time(provider, "supersede", t, &r);
            match r {
                Ok(()) => {
                    info!(region = %c.region, image = %c.image_id, by = %c.by, "marked an earlier copy superseded");
                    self.with_mem(key, |m| m.superseded.insert(c.image_id.clone()));
                }
                Err(e) => {
                    warn!(region = %c.region, image = %c.image_id, error = %e, "marking an earlier copy superseded failed; will try again")
                }
            }
        }
    }

    /// Delete the copies of earlier sources the plan retires (`retention.keep`, or a removed
    /// destination's under `deletionPolicy: Delete`): shares withdrawn first, then the image,
    /// with the account that owns it. The outcome goes to the next plan.
    async fn retire(
        &self,
        obj: &ImageReplication,
        key: &str,
        provider: &dyn ImageService,
        main: &Account,
        others: &OtherAccounts,
        plan: &VmPlan,
    ) {
        let source_id = plan.status.source.as_ref().and_then(|x| x.image_id.clone());
        for c in &plan.retire {
            let r = match account_for(obj, &c.region, main, others) {
                Ok(a) => delete_copy(
                    provider,
                    a,
                    &previous_at(obj, c),
                    &c.shared_with,
                    the_source(obj, source_id.as_deref()),
                )
                .await
                .map(|_| ())
                .map_err(|e| ProviderError::transient(e.to_string())),
                Err(e) => Err(e),
            };
            match &r {
                Ok(()) => info!(region = %c.region, image = %c.image_id, "deleted an earlier source's copy"),
                Err(e) => {
                    warn!(region = %c.region, image = %c.image_id, error = %e, "deleting an earlier copy failed; will try again")
                }
            }
            self.with_mem(key, |m| m.retired.insert(c.image_id.clone(), r));
        }
        if !plan.retire.is_empty() {
            (self.wake)(key);
        }
    }

    /// A copy in flight when the object goes: cancelled where the provider can; otherwise
    /// waited for (`Err`: not yet) and, once finished, its image handed back for the deletion
    /// policy. A copy that cannot be found or ended otherwise leaves nothing.
    async fn stop_in_flight(
        &self,
        obj: &ImageReplication,
        provider: &dyn ImageService,
        acct: &Account,
        s: &DestinationStatus,
        source: Option<&ImageInfo>,
    ) -> Result<Stopped, Blocked> {
        let region = s.region.as_str();
        let req = source.and_then(|src| request_for(obj, s, src));
        let mut h = handle_of(s);
        if h.image_id.is_none()
            && h.task_id.is_none()
            && let Some(req) = &req
        {
            h = provider
                .find_copy(acct, req)
                .await
                .map_err(|e| Blocked::at(region, format!("looking up the copy: {e}")))?
                .unwrap_or_default();
        }
        if h.image_id.is_none() && h.task_id.is_none() {
            return Ok(Stopped::Finished(None));
        }
        if provider.can_cancel() {
            provider
                .cancel(acct, region, &h)
                .await
                .map_err(|e| Blocked::at(region, format!("cancelling the copy: {e}")))?;
            return Ok(Stopped::Cancelled);
        }
        let Some(req) = req else {
            return Ok(Stopped::Finished(None));
        };
        let state = provider
            .poll(acct, &req, &h)
            .await
            .map_err(|e| Blocked::at(region, format!("polling the copy: {e}")))?;
        match state.phase {
            TaskPhase::Running => Err(Blocked::at(
                region,
                "the copy cannot be cancelled; waiting for it to finish",
            )),
            TaskPhase::Succeeded => Ok(Stopped::Finished(state.image_id.or(h.image_id))),
            // Not listed yet: it may still show (and would be left behind), so it is waited
            // for within the cloud's listing window.
            TaskPhase::Unlisted => match listing(provider).wait_left(s, &Time(k8s_openapi::jiff::Timestamp::now())) {
                Some(left) => Err(Blocked::at(
                    region,
                    format!(
                        "the cloud does not list the copy yet; waiting up to {}s for it before the deletion policy applies",
                        left.as_secs()
                    ),
                )),
                None => Ok(Stopped::Finished(None)),
            },
            _ => Ok(Stopped::Finished(None)),
        }
    }

    /// Before the finalizer goes: cancel copies in flight where the provider can (otherwise
    /// wait for them), then apply the deletion policy. `Err` means "not yet": try again later.
    pub async fn cleanup(
        &self,
        obj: &ImageReplication,
        provider: &dyn ImageService,
        acct: Result<Account, ProviderError>,
        others: &OtherAccounts,
    ) -> Result<String, Blocked> {
        let key = key_of(obj);
        let st = obj.status.clone().unwrap_or_default();
        let main = match acct {
            Ok(a) => a,
            Err(e) if cleanup_needs_account(obj, &st) => return Err(e.message.into()),
            Err(_) => Account::default(),
        };
        let main = &main;
        let source = self
            .with_mem(&key, |m| m.source.clone())
            .or_else(|| source_from_status(obj));
        let mut notes = vec![format!("deletionPolicy {:?}", obj.spec.deletion_policy)];
        let (mut cancelled, mut removed, mut kept): (Vec<String>, Vec<String>, Vec<String>) = Default::default();
        let mut withdrawn: Vec<String> = Vec::new();
        for s in &st.destinations {
            let region = s.region.as_str();
            let mut image = s.image_id.clone().filter(|_| s.phase == DestinationPhase::Available);
            let needs = image.is_some() || s.phase != DestinationPhase::Available;
            let acct = match account_for(obj, region, main, others) {
                Ok(a) => a,
                Err(e) if needs && obj.spec.deletion_policy == DeletionPolicy::Delete => {
                    return Err(Blocked::at(region, e.message));
                }
                Err(_) => main,
            };
            // A copy owned by another account: the source's share with it goes too.
            if let (Some(o), Some(src)) = (
                owner_of(obj, region),
                st.source.as_ref().and_then(|x| x.image_id.as_deref()),
            ) {
                provider.unshare(main, &source_at(obj, src), &o.id).await.map_err(|e| {
                    Blocked::at(
                        region,
                        format!("withdrawing the source's share with account {}: {e}", o.id),
                    )
                })?;
            }
            if vplan::in_flight(s.phase) {
                match self.stop_in_flight(obj, provider, acct, s, source.as_ref()).await? {
                    Stopped::Cancelled => {
                        cancelled.push(region.to_string());
                        continue;
                    }
                    Stopped::Finished(id) => image = id,
                }
            }
            let Some(id) = image else { continue };
            let source_id = st.source.as_ref().and_then(|x| x.image_id.as_deref());
            match obj.spec.deletion_policy {
                DeletionPolicy::Delete => {
                    let (at, shared) = copy_at(obj, s, &id);
                    let from = delete_copy(provider, acct, &at, &shared, the_source(obj, source_id)).await?;
                    withdrawn.extend(from.iter().map(|a| format!("{region} ({id}) from {a}")));
                    if the_source(obj, source_id) != Some((region, id.as_str())) {
                        removed.push(format!("{region} ({id})"));
                    }
                }
                DeletionPolicy::Retain => kept.push(format!("{region} ({id})")),
            }
        }
        let (deleted, retained) = cleanup_previous(obj, &st, provider, main, others).await?;
        removed.extend(deleted);
        kept.extend(retained);
        for (done, what) in [
            (withdrawn, "withdrew the shares of"),
            (cancelled, "cancelled the copies in flight to"),
            (removed, "deleted the destination images in"),
            (kept, "kept the destination images in"),
        ] {
            if !done.is_empty() {
                notes.push(format!("{what} {}", done.join(", ")));
            }
        }
        self.quota.release(&key);
        if let Some(slots) = &self.slots {
            // Its slots go at once (not after the lease duration).
            let account = account_key(obj);
            if let Ok(view) = slots.read(&account, limit_of(obj, provider)).await {
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let sp = super::slots::plan(&view.slots, &view.queue, &key, &[], &[], now);
                slots.take(&account, &view, &sp).await;
            }
        }
        if let Some(m) = &self.metrics {
            self.freshness.forget(m, &key);
        }
        self.memory.lock().expect("vm memory").remove(&key);
        if let Some(p) = self.metrics.as_ref().map(|_| provider.kind().as_str()) {
            self.refresh_gauges(p);
        }
        Ok(notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{self, VALIDATED};
    use crate::image_replication::vm::fake::FakeCloud;

    fn obj() -> ImageReplication {
        serde_yaml::from_str(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {name: web, namespace: default, uid: 0f8e2a4c-1111-2222-3333-444455556666, generation: 1}
spec:
  provider: {kind: openstack, credentialsSecretRef: {name: cloud-creds}}
  source: {region: one, imageId: img-1}
  destinations: [{region: two}]
"#,
        )
        .unwrap()
    }

    fn account(password: &str) -> Account {
        Account {
            secret: [("password".to_string(), password.as_bytes().to_vec())].into(),
            ..Default::default()
        }
    }

    fn engine() -> VmEngine {
        VmEngine::new(Settings::default(), Arc::new(|_: &str| {}), None)
    }

    /// A new copy is polled after 1 s, then the interval doubles at every poll up to 60 s,
    /// whether the copy moved or not: progress that rises at every poll (ECS, CVM) used to hold
    /// the interval at its minimum for the copy's whole life (a 90 s copy: 13 polls at 5 s
    /// instead of 7).
    #[test]
    fn polls_start_soon_and_back_off_on_the_copys_age_not_its_progress() {
        let e = engine();
        let mut seen = Vec::new();
        for b in [0, 10, 20, 30, 40, 50, 60, 70, 80, 90] {
            e.polled("k", "two", Some(b));
            seen.push(e.with_mem("k", |m| m.polls["two"].1.as_secs()));
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        // A 90 s copy: polled at 1, 3, 7, 15, 31, 63 and 123 s.
        let at: Vec<u64> = seen
            .iter()
            .scan(0, |t, d| {
                *t += d;
                Some(*t)
            })
            .take_while(|t| *t <= 123)
            .collect();
        assert_eq!(at.len(), 7);
    }

    /// Refused credentials are not tried again on every reconcile (a lockout policy would lock
    /// the account): the status names the Secret and when it is tried next, the spec is not yet
    /// called valid (the source's rules never ran), and a changed Secret is tried at once.
    #[tokio::test]
    async fn refused_credentials_back_off_and_a_changed_secret_is_tried_at_once() {
        let (e, cloud) = (engine(), FakeCloud::new("right"));
        cloud.add_image("one", "img-1", 1 << 20);
        let mut o = obj();
        let now = crate::plan::test_at(0);
        let p = e.reconcile(&o, &Gate::Open, &cloud, Ok(account("wrong")), &now).await;
        assert_eq!(cloud.calls("describe"), 1);
        let v = conditions::find(&p.status.conditions, VALIDATED).unwrap();
        assert_eq!(
            (v.status.as_str(), v.reason.as_str()),
            ("Unknown", "SourceNotChecked"),
            "{v:?}"
        );
        let ready = conditions::find(&p.status.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, "CredentialsRefused");
        assert!(
            ready.message.contains("Secret cloud-creds") && ready.message.contains("as soon as the Secret changes"),
            "{}",
            ready.message
        );
        o.status = Some(p.status.clone());
        // The same Secret again, many times: no request reaches the cloud, and the status does
        // not change (nothing to write).
        for _ in 0..5 {
            let again = e.reconcile(&o, &Gate::Open, &cloud, Ok(account("wrong")), &now).await;
            assert_eq!(again.status, p.status);
        }
        assert_eq!(cloud.calls("describe"), 1, "backed off");
        assert!(auth_backoff(1) >= Duration::from_secs(300) && auth_backoff(9) == Duration::from_secs(3600));
        // The Secret is fixed: tried at once, and the copy is admitted.
        let p = e.reconcile(&o, &Gate::Open, &cloud, Ok(account("right")), &now).await;
        assert_eq!(cloud.calls("describe"), 2);
        assert!(
            conditions::is_true(&p.status.conditions, VALIDATED),
            "{:?}",
            p.status.conditions
        );
        assert_eq!(p.start, vec!["two".to_string()]);
    }

    fn shared(accounts: &str, policy: &str) -> ImageReplication {
        let mut o = obj();
        o.spec = serde_yaml::from_str(&format!(
            r#"
provider: {{kind: openstack, credentialsSecretRef: {{name: cloud-creds}}}}
source: {{region: one, imageId: img-1}}
deletionPolicy: {policy}
destinations:
- region: two
  shareWith: {accounts}
- region: one
  shareWith: [{{account: p3}}]
"#
        ))
        .unwrap();
        o
    }

    /// Reconcile and act until nothing is left to do (at most `n` rounds), as the controller does.
    async fn settle(
        e: &VmEngine,
        o: &mut ImageReplication,
        cloud: &FakeCloud,
        members: &HashMap<String, Result<Account, ProviderError>>,
        t: &mut i64,
    ) -> VmPlan {
        run_rounds(e, o, cloud, members, t).await.0
    }

    /// Twelve reconcile-and-act rounds, 20 s apart: the last plan and the Events of all.
    async fn run_rounds(
        e: &VmEngine,
        o: &mut ImageReplication,
        cloud: &FakeCloud,
        members: &HashMap<String, Result<Account, ProviderError>>,
        t: &mut i64,
    ) -> (VmPlan, Vec<(String, String)>) {
        let (mut last, mut seen) = (None, Vec::new());
        for _ in 0..12 {
            *t += 20;
            let now = crate::plan::test_at(*t);
            let p = e.reconcile(o, &Gate::Open, cloud, Ok(account("right")), &now).await;
            seen.extend(p.events.iter().map(|a| (a.reason.clone(), a.note.clone())));
            o.status = Some(p.status.clone());
            e.act(o, cloud, &account("right"), members, &p).await;
            last = Some(p);
        }
        (last.expect("rounds ran"), seen)
    }

    /// One object copies to a region and shares the copy with two projects (one accepted with
    /// its Secret, one left to its owner, with why), shares the source itself in its own region
    /// (no copy), withdraws an account that leaves the list, and on delete withdraws every share
    /// before it deletes the copy, and never deletes the source.
    #[tokio::test]
    async fn shares_follow_the_copy_and_go_before_it_on_delete() {
        let e = fast_engine();
        let cloud = FakeCloud::new("right");
        cloud.add_image("one", "img-1", 1 << 20);
        let members: HashMap<String, Result<Account, ProviderError>> =
            [("p1-creds".to_string(), Ok(account("member:p1")))].into();
        let mut o = shared("[{account: p1, acceptWith: {name: p1-creds}}, {account: p2}]", "Delete");
        o.metadata.generation = Some(1);
        let mut t = 0;
        let p = settle(&e, &mut o, &cloud, &members, &mut t).await;
        let two = p.status.destinations.iter().find(|d| d.region == "two").unwrap();
        let copy = two.image_id.clone().unwrap();
        assert_eq!(two.phase, DestinationPhase::Available);
        let states: Vec<_> = two.shares.iter().map(|x| (x.account.as_str(), x.state)).collect();
        assert_eq!(states, vec![("p1", SharePhase::Accepted), ("p2", SharePhase::Pending)]);
        assert!(
            two.shares[1]
                .message
                .as_deref()
                .unwrap()
                .contains("accept it in account p2")
        );
        let one = p.status.destinations.iter().find(|d| d.region == "one").unwrap();
        assert_eq!(
            (one.phase, one.image_id.as_deref()),
            (DestinationPhase::Available, Some("img-1"))
        );
        assert_eq!(
            cloud.members_of("one", "img-1"),
            vec![super::super::Member::new("p3", super::super::MemberStatus::Pending)]
        );
        assert_eq!(
            cloud.images_in("one"),
            vec!["img-1".to_string()],
            "the source is shared, not copied"
        );
        assert_eq!(p.status.summary.as_deref(), Some("2/2 available, 1/3 shares"));
        let ready = conditions::find(&p.status.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SharesPending")
        );

        // p2 leaves the list: withdrawn; p3 accepts in its own account: the object is Ready.
        o.spec.destinations[0].share_with.truncate(1);
        o.metadata.generation = Some(2);
        let member = account("member:p3");
        let at = ImageAt {
            region: "one".into(),
            project: None,
            image_id: "img-1".into(),
        };
        super::super::Service::accept(&cloud, &member, &at, "p3").await.unwrap();
        let p = settle(&e, &mut o, &cloud, &members, &mut t).await;
        assert_eq!(cloud.members_of("two", &copy).len(), 1);
        assert_eq!(p.status.summary.as_deref(), Some("2/2 available, 2/2 shares"));
        assert!(
            conditions::is_true(&p.status.conditions, "Ready"),
            "{:?}",
            p.status.conditions
        );

        // Delete: the shares go, then the copy; the source stays.
        let notes = e
            .cleanup(&o, &cloud, Ok(account("right")), &OtherAccounts::new())
            .await
            .unwrap();
        assert!(cloud.members_of("two", &copy).is_empty(), "{notes}");
        assert!(cloud.members_of("one", "img-1").is_empty(), "{notes}");
        assert!(cloud.images_in("two").is_empty(), "{notes}");
        assert_eq!(cloud.images_in("one"), vec!["img-1".to_string()], "{notes}");
        assert!(notes.contains("withdrew the shares of two"), "{notes}");
    }

    /// A destination removed from the spec (a line deleted in Git): under `deletionPolicy:
    /// Delete` its copy is deleted (its shares withdrawn first) and it is forgotten with an
    /// Event; under `Retain` its copy stays and it is forgotten; a copy in flight is cancelled.
    #[tokio::test]
    async fn destinations_removed_from_the_spec_are_pruned_per_policy() {
        let settings = Settings {
            poll_min: Duration::ZERO,
            resync: Duration::ZERO,
            ..Settings::default()
        };
        for policy in ["Delete", "Retain"] {
            let e = VmEngine::new(settings.clone(), Arc::new(|_: &str| {}), None);
            let cloud = FakeCloud::new("right");
            cloud.add_image("one", "img-1", 1 << 20);
            let mut o = shared("[{account: p1}]", policy);
            o.metadata.generation = Some(1);
            let mut t = 0;
            let p = settle(&e, &mut o, &cloud, &OtherAccounts::new(), &mut t).await;
            let copy = p.status.destinations[0].image_id.clone().unwrap();
            assert_eq!(cloud.members_of("two", &copy).len(), 1);
            // Region two leaves the spec.
            o.spec.destinations.remove(0);
            o.metadata.generation = Some(2);
            let mut events = Vec::new();
            for _ in 0..4 {
                t += 20;
                let now = crate::plan::test_at(t);
                let p = e.reconcile(&o, &Gate::Open, &cloud, Ok(account("right")), &now).await;
                events.extend(p.events.iter().map(|a| (a.reason.clone(), a.note.clone())));
                o.status = Some(p.status.clone());
                e.act(&o, &cloud, &account("right"), &OtherAccounts::new(), &p).await;
            }
            let st = o.status.clone().unwrap();
            assert!(st.destinations.iter().all(|d| d.region != "two"), "{policy}: forgotten");
            let removed = events
                .iter()
                .find(|(r, _)| r == "DestinationRemoved")
                .expect("an Event");
            if policy == "Delete" {
                assert!(cloud.images_in("two").is_empty(), "the copy is deleted");
                assert!(cloud.members_of("two", &copy).is_empty(), "its share withdrawn");
                assert!(removed.1.contains("was deleted"), "{removed:?}");
            } else {
                assert_eq!(cloud.images_in("two"), vec![copy.clone()], "the copy is kept");
                assert!(removed.1.contains("is kept"), "{removed:?}");
            }
            assert_eq!(cloud.images_in("one"), vec!["img-1".to_string()], "never the source");
        }
    }

    /// An engine that polls and checks for drift at every reconcile.
    fn fast_engine() -> VmEngine {
        let settings = Settings {
            poll_min: Duration::ZERO,
            resync: Duration::ZERO,
            ..Settings::default()
        };
        VmEngine::new(settings, Arc::new(|_: &str| {}), None)
    }

    /// The source is described once per piece of work, not at every round while its copy
    /// runs (it was: 50 source DescribeImages against 13 polls of one 90 s copy on AWS, on the
    /// same rate-limited API); a copy of it started again later (after a failure, a spec change)
    /// reads it again.
    #[tokio::test]
    async fn the_source_is_described_once_per_piece_of_work() {
        let settings = Settings {
            poll_min: Duration::ZERO,
            resync: Duration::from_secs(3600),
            ..Settings::default()
        };
        let e = VmEngine::new(settings, Arc::new(|_: &str| {}), None);
        let mut cloud = FakeCloud::new("right");
        cloud.polls_to_finish = 8;
        cloud.add_image("one", "img-1", 1 << 20);
        let mut o = obj();
        let mut t = 0;
        let (p, _) = run_rounds(&e, &mut o, &cloud, &OtherAccounts::new(), &mut t).await;
        let two = p.status.destinations.iter().find(|d| d.region == "two").unwrap();
        assert_eq!(two.phase, DestinationPhase::Available, "{two:?}");
        assert!(cloud.calls("poll") >= 8, "polled {} times", cloud.calls("poll"));
        assert_eq!(cloud.calls("describe"), 1, "the source read once for the copy");
        // A spec change is new work: the source is read again.
        o.metadata.generation = Some(2);
        run_rounds(&e, &mut o, &cloud, &OtherAccounts::new(), &mut t).await;
        assert_eq!(cloud.calls("describe"), 2);
    }

    /// Twelve rounds (see `run_rounds`); the Events they published.
    async fn rounds(e: &VmEngine, o: &mut ImageReplication, cloud: &FakeCloud, t: &mut i64) -> Vec<(String, String)> {
        run_rounds(e, o, cloud, &OtherAccounts::new(), t).await.1
    }

    /// `source.follow: Newest` with `retention.keep: 2`: each newer image matching the pattern
    /// starts new copies (an Event says which replaced which), the copy it replaces is kept as
    /// an earlier copy, the oldest beyond two per region is deleted, and deleting the object
    /// deletes every copy it kept — never a source.
    #[tokio::test]
    async fn a_followed_source_moves_on_and_old_copies_go_beyond_keep() {
        let e = fast_engine();
        let cloud = FakeCloud::new("right");
        cloud.add_image_created("one", "golden-1", 1 << 20, "2026-12-01T00:00:00Z");
        cloud.add_image_created("one", "other-9", 1 << 20, "2026-12-09T00:00:00Z");
        let mut o = obj();
        o.spec = serde_yaml::from_str(
            r#"
provider: {kind: openstack, credentialsSecretRef: {name: cloud-creds}}
source: {region: one, imageName: golden-*, follow: Newest, checkInterval: 1m}
retention: {keep: 2}
deletionPolicy: Delete
destinations: [{region: two}, {region: three}]
"#,
        )
        .unwrap();
        let mut t = 0;
        let mut events: Vec<(String, String)> = Vec::new();
        events.extend(rounds(&e, &mut o, &cloud, &mut t).await);
        let st = o.status.clone().unwrap();
        assert_eq!(st.source.as_ref().unwrap().image_id.as_deref(), Some("golden-1"));
        assert!(st.source.as_ref().unwrap().resolved_at.is_some());
        let first: Vec<String> = st.destinations.iter().map(|d| d.image_id.clone().unwrap()).collect();
        assert!(st.destinations.iter().all(|d| d.phase == DestinationPhase::Available));
        assert!(st.previous.is_empty());

        cloud.add_image_created("one", "golden-2", 1 << 20, "2026-12-02T00:00:00Z");
        events.extend(rounds(&e, &mut o, &cloud, &mut t).await);
        let st = o.status.clone().unwrap();
        assert_eq!(st.source.as_ref().unwrap().image_id.as_deref(), Some("golden-2"));
        let changed = events
            .iter()
            .find(|(r, _)| r == "SourceChanged")
            .expect("SourceChanged");
        assert!(
            changed.1.contains("is now golden-2") && changed.1.contains("replacing golden-1"),
            "{changed:?}"
        );
        assert!(st.destinations.iter().all(|d| d.phase == DestinationPhase::Available
            && d.source_image_id.as_deref() == Some("golden-2")
            && !first.contains(d.image_id.as_ref().unwrap())));
        let kept: Vec<&str> = st.previous.iter().map(|c| c.image_id.as_str()).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(first.iter().all(|f| kept.contains(&f.as_str())));
        assert_eq!(
            cloud.images_in("two").len(),
            2,
            "keep 2: the current copy and golden-1's"
        );

        cloud.add_image_created("one", "golden-3", 1 << 20, "2026-12-03T00:00:00Z");
        events.extend(rounds(&e, &mut o, &cloud, &mut t).await);
        let st = o.status.clone().unwrap();
        assert_eq!(st.previous.len(), 2, "one earlier copy per region: {:?}", st.previous);
        assert!(
            st.previous
                .iter()
                .all(|c| c.source_image_id.as_deref() == Some("golden-2"))
        );
        for region in ["two", "three"] {
            let images = cloud.images_in(region);
            assert_eq!(images.len(), 2, "{region}: {images:?}");
            assert!(
                first.iter().all(|f| !images.contains(f)),
                "golden-1's copies are deleted"
            );
        }
        let retired: Vec<_> = events.iter().filter(|(r, _)| r == "PreviousCopyDeleted").collect();
        assert_eq!(retired.len(), 2, "{retired:?}");
        assert!(retired[0].1.contains("retention.keep is 2"), "{retired:?}");

        // At rest: nothing changes.
        let before = o.status.clone();
        let quiet = rounds(&e, &mut o, &cloud, &mut t).await;
        assert_eq!(o.status, before);
        assert!(quiet.is_empty(), "{quiet:?}");
        // Each look lists the candidates; only a new image is described.
        assert!(cloud.calls("candidates") > 3);
        assert_eq!(cloud.calls("describe"), 3, "one describe per source version");

        let note = e
            .cleanup(&o, &cloud, Ok(account("right")), &OtherAccounts::new())
            .await
            .unwrap();
        assert!(note.contains("an earlier copy"), "{note}");
        assert!(cloud.images_in("two").is_empty() && cloud.images_in("three").is_empty());
        assert_eq!(cloud.images_in("one").len(), 4, "never a source");
    }
}
