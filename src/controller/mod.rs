//! The two controllers and the context they share.
//!
//! Each reconcile is a thin shell: observe the object, call the pure planner, write status with
//! server-side apply (only when it changed), publish an Event when the headline changed. The
//! finalizer guarantees the cleanup hook runs before an object goes away.

pub mod events;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::conditions;
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, instrument, warn};

use crate::api::v1alpha1::{
    DeletionPolicy, ImageReplication, ImageReplicationStatus, ProviderKind, ReplicaInstance, ReplicaInstanceStatus,
    ReplicaProvider,
};
use crate::api::{FIELD_MANAGER, FINALIZER};
use crate::image_replication::oci::{OciReplicator, SecretCredentials};
use crate::oci::{OciError, Progress};
use crate::plan::{Announcement, Gate};
use crate::replica_instance::notify::Notifications;
use crate::replica_instance::oci::{ReplicaSyncer, SyncProgress, SyncTasks, SyncView};
use crate::replica_instance::plan::SyncStart;
use crate::server::http::Health;
use crate::server::metrics::Metrics;
use crate::tasks::Tasks;
use crate::{Error, Result, plan, provider, validation};

/// State shared by both controllers.
pub struct Context {
    pub client: Client,
    pub events: events::Events,
    pub metrics: Metrics,
    pub providers: provider::Registry,
    /// The oci copy engine, shared by every object (one budget per registry host).
    pub oci: Arc<OciReplicator>,
    /// Copy tasks running in the background.
    pub tasks: Arc<Tasks>,
    /// How often an Available copy is checked for drift.
    pub resync: Duration,
    /// ReplicaInstance syncs (oci).
    pub syncer: Arc<ReplicaSyncer>,
    pub sync_tasks: Arc<SyncTasks>,
    pub notifications: Arc<Notifications>,
    /// VM image copies (huawei, alibaba, aws, tencent, openstack): engine, quota queue, polling.
    pub vm: Arc<crate::image_replication::vm::engine::VmEngine>,
    /// ReplicaInstance tencent: the TCR API client.
    pub tcr: Arc<crate::replica_instance::tcr::Tcr>,
    /// Per ReplicaInstance (lag seconds, queued artifacts), for the gauges.
    replica_gauges: Mutex<HashMap<String, (i64, i64)>>,
    /// Keys (namespace/name) to reconcile at once: finished copies, finished syncs, notifications.
    ri_trigger: tokio::sync::mpsc::UnboundedSender<String>,
    ir_trigger: tokio::sync::mpsc::UnboundedSender<String>,
    receivers: Mutex<Option<Triggers>>,
    backoff: Mutex<HashMap<String, u32>>,
    /// This installation's name (`<namespace>/<lease name>`), written on every object it
    /// reconciles; objects naming another installation are left to it.
    pub installation: String,
    /// Take over objects that name another installation (a move between installations).
    pub adopt: bool,
    /// Objects already reported as owned elsewhere (one Warning Event each per process).
    elsewhere: Mutex<HashSet<String>>,
}

type Triggers = (
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
);

impl Context {
    pub fn new(client: Client, identity: &str, metrics: Metrics, providers: provider::Registry) -> Self {
        let reporter = Reporter {
            controller: "image-replication-operator".into(),
            instance: Some(identity.to_string()),
        };
        let oci = Arc::new(OciReplicator::with_budgets(
            crate::oci::Budgets::default().with_observer(metrics.registry_observer()),
        ));
        let syncer = Arc::new(ReplicaSyncer::with_budgets(
            crate::oci::Budgets::default().with_observer(metrics.registry_observer()),
        ));
        let (ir_tx, ir_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (ri_tx, ri_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (t1, t2) = (ir_tx.clone(), ri_tx.clone());
        let vm = Arc::new(crate::image_replication::vm::engine::VmEngine::new(
            Default::default(),
            vm_wake(ir_tx.clone()),
            Some(metrics.clone()),
        ));
        // The oci provider and replica backend are built in: registered like any provider.
        let tcr = Arc::new(crate::replica_instance::tcr::Tcr::default());
        let providers = providers
            .with_image(oci.clone())
            .with_replica(syncer.clone())
            .with_replica(tcr.clone());
        Self {
            events: events::Events::new(client.clone(), reporter),
            client,
            metrics,
            providers,
            oci,
            tasks: Arc::new(Tasks::new(Arc::new(move |k: &str| {
                let _ = t1.send(k.to_string());
            }))),
            resync: Duration::from_secs(300),
            syncer,
            sync_tasks: Arc::new(SyncTasks::new(Arc::new(move |k: &str| {
                let _ = t2.send(k.to_string());
            }))),
            notifications: Arc::new(Notifications::new(None)),
            vm,
            tcr,
            replica_gauges: Mutex::new(HashMap::new()),
            ri_trigger: ri_tx,
            ir_trigger: ir_tx,
            receivers: Mutex::new(Some((ir_rx, ri_rx))),
            backoff: Mutex::new(HashMap::new()),
            installation: "default/image-replication-operator".into(),
            adopt: false,
            elsewhere: Mutex::new(HashSet::new()),
        }
    }

    /// Name this installation (`adopt`: take over objects another installation claimed).
    pub fn with_installation(mut self, installation: &str, adopt: bool) -> Self {
        self.installation = installation.to_string();
        self.adopt = adopt;
        self
    }

    /// Use this notification state (shared with the HTTP endpoint).
    pub fn with_notifications(self, n: Arc<Notifications>) -> Self {
        n.set_trigger(self.ri_trigger.clone());
        Self {
            notifications: n,
            ..self
        }
    }

    fn set_replica_gauges(&self, key: &str, lag: i64, queued: i64) {
        let mut g = self.replica_gauges.lock().expect("gauges lock");
        if lag == 0 && queued == 0 {
            g.remove(key);
        } else {
            g.insert(key.to_string(), (lag, queued));
        }
        self.metrics
            .replica_lag
            .set(g.values().map(|v| v.0).max().unwrap_or(0) as f64);
        self.metrics.sync_queue_depth.set(g.values().map(|v| v.1).sum());
    }

    /// Check Available copies for drift this often.
    pub fn with_resync(mut self, resync: Duration) -> Self {
        self.resync = resync;
        self
    }

    /// Tune the VM copy engine (limits, polling, drift checks).
    pub fn with_vm_settings(mut self, settings: crate::image_replication::vm::engine::Settings) -> Self {
        self.vm = Arc::new(crate::image_replication::vm::engine::VmEngine::new(
            settings,
            vm_wake(self.ir_trigger.clone()),
            Some(self.metrics.clone()),
        ));
        self
    }

    /// Next delay for an object that failed again: 5 s doubling to 5 min.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.backoff.lock().expect("backoff lock");
        let n = map.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(10);
        backoff_delay(*n)
    }

    fn reset_backoff(&self, key: &str) {
        self.backoff.lock().expect("backoff lock").remove(key);
    }
}

fn vm_wake(tx: tokio::sync::mpsc::UnboundedSender<String>) -> crate::image_replication::vm::quota::Wake {
    Arc::new(move |k: &str| {
        let _ = tx.send(k.to_string());
    })
}

/// Delay after the n-th consecutive failure (n >= 1): 5 s, 10 s, 20 s, ... capped at 300 s.
pub fn backoff_delay(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.saturating_sub(1).min(6)).min(300))
}

/// The outcome of planning one object.
pub struct Planned<S> {
    pub status: S,
    /// Destinations (region, resync?) whose copy should start once the status is written.
    pub start: Vec<(String, bool)>,
    /// Cancel every running copy of the object (suspend).
    pub cancel: bool,
    pub requeue: Option<Duration>,
    /// Per-destination Events, besides the headline one.
    pub events: Vec<Announcement>,
    /// ReplicaInstance: the sync to start once the status is written.
    pub sync: Option<SyncStart>,
    /// VM copies: the plan whose starts and cancels run once the status is written.
    pub vm: Option<crate::image_replication::vm::plan::VmPlan>,
    /// ReplicaInstance tencent: create the TCR replica once the status is written.
    pub replica_create: bool,
    /// VM copies: the account read while planning, for `act` (each Secret is read once per
    /// reconcile).
    pub account: Option<crate::image_replication::vm::Account>,
}

impl<S> Planned<S> {
    fn settled(status: S) -> Self {
        Self {
            status,
            start: Vec::new(),
            cancel: false,
            requeue: None,
            events: Vec::new(),
            sync: None,
            vm: None,
            replica_create: false,
            account: None,
        }
    }
}

/// What the generic reconcile needs from each kind.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + DeserializeOwned + PartialEq + Clone + Send + Sync;
    /// Metric label and log name of the controller.
    const CONTROLLER: &'static str;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions_of(status: &Self::Status) -> &[Condition];
    /// Observe the background tasks and plan (pure apart from collecting finished tasks).
    fn plan(&self, ctx: &Context, now: &Time) -> impl Future<Output = Planned<Self::Status>> + Send;
    /// Start or cancel work after the planned status is written.
    fn act(&self, ctx: &Context, planned: &Planned<Self::Status>) -> impl Future<Output = Result<()>> + Send;
    /// Cleanup before the finalizer goes; returns the note of the CleanupComplete Event.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<String>> + Send;
    /// The status while the cleanup cannot finish (`message` says why): Ready=False with
    /// reason DeletionBlocked and the remedy.
    fn blocked_status(&self, message: &str, now: &Time) -> Self::Status;
}

/// The conditions of an object whose delete cannot finish yet.
fn blocked_conditions(old: &[Condition], message: &str, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let m = format!(
        "deleting: {message}; the object goes once the cleanup succeeds (fix the destination, or set deletionPolicy: Retain to let it go now)"
    );
    let desired = vec![
        conditions::Desired::new(conditions::READY, false, "DeletionBlocked", m.clone()),
        conditions::Desired::new(conditions::RECONCILING, true, "DeletionBlocked", m),
        conditions::Desired::new(conditions::STALLED, false, "DeletionBlocked", ""),
    ];
    conditions::merge(old, &desired, generation, now)
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

impl ImageReplication {
    fn gate(&self, providers: &provider::Registry) -> Gate {
        let kind = self.spec.provider.kind;
        let implemented = providers.has_image(kind);
        plan::gate(
            validation::image_replication(&self.spec),
            kind.as_str(),
            implemented,
            self.spec.suspend,
        )
    }

    /// The VM provider account: the referenced Secret's data and the endpoint override.
    async fn account(&self, ctx: &Context) -> Result<crate::image_replication::vm::Account, String> {
        let ns = self.namespace().unwrap_or_default();
        let secret = match &self.spec.provider.credentials_secret_ref {
            Some(r) => secret_data(ctx, &ns, &r.name).await?,
            None => Default::default(),
        };
        Ok(crate::image_replication::vm::Account {
            secret,
            endpoint: self.spec.provider.endpoint.clone(),
            agency: self.spec.provider.agency.clone(),
        })
    }

    async fn credentials(&self, ctx: &Context) -> Result<SecretCredentials, String> {
        secret_credentials(
            ctx,
            &self.namespace().unwrap_or_default(),
            self.spec.provider.credentials_secret_ref.as_ref(),
        )
        .await
    }
}

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

impl Managed for ImageReplication {
    type Status = ImageReplicationStatus;
    const CONTROLLER: &'static str = "image_replication";
    fn current_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions_of(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    async fn plan(&self, ctx: &Context, now: &Time) -> Planned<Self::Status> {
        let gate = self.gate(&ctx.providers);
        if let Some(p) = ctx.providers.vm(self.spec.provider.kind) {
            let acct = self.account(ctx).await;
            let vm = ctx.vm.reconcile(self, &gate, p.as_ref(), acct.clone(), now).await;
            return Planned {
                status: vm.status.clone(),
                requeue: vm.requeue,
                events: vm.events.clone(),
                vm: Some(vm),
                account: acct.ok(),
                ..Planned::settled(ImageReplicationStatus::default())
            };
        }
        if gate == Gate::Open && self.spec.provider.kind == ProviderKind::Oci {
            let key = key_of(self);
            let view = ctx.tasks.collect(&key, now);
            let regions: Vec<String> = self.spec.destinations.iter().map(|d| d.region.clone()).collect();
            let checked = ctx.tasks.checked(&key, &regions, now, ctx.resync);
            for v in view.values() {
                let outcome = match v {
                    plan::TaskView::Succeeded { up_to_date: true, .. } => "up_to_date",
                    plan::TaskView::Succeeded { .. } => "copied",
                    plan::TaskView::Failed { .. } => "failed",
                    plan::TaskView::Running { .. } | plan::TaskView::Idle => continue,
                };
                ctx.metrics.copy_tasks.with_label_values(&["oci", outcome]).inc();
            }
            ctx.metrics.copy_tasks_running.set(ctx.tasks.len() as i64);
            ctx.oci.note_copies(self);
            let p =
                crate::image_replication::plan::oci_plan(self, &view, &checked, now, ctx.resync, plan::MAX_ATTEMPTS);
            return Planned {
                status: p.status,
                start: p.start,
                requeue: p.requeue,
                events: p.events,
                ..Planned::settled(ImageReplicationStatus::default())
            };
        }
        let implemented = gate != Gate::ProviderNotImplemented(self.spec.provider.kind.as_str());
        let mut planned = Planned::settled(plan::image_replication_status(self, implemented, now));
        // Suspended, or the spec became invalid: stop what runs.
        planned.cancel = matches!(gate, Gate::Suspended | Gate::Invalid(_));
        planned
    }
    async fn act(&self, ctx: &Context, planned: &Planned<Self::Status>) -> Result<()> {
        let key = key_of(self);
        if let (Some(vm), Some(p)) = (&planned.vm, ctx.providers.vm(self.spec.provider.kind)) {
            if !vm.start.is_empty() || !vm.cancel.is_empty() {
                let acct = match &planned.account {
                    Some(a) => a.clone(),
                    None => self.account(ctx).await.map_err(Error::Provider)?,
                };
                ctx.vm.act(self, p.as_ref(), &acct, vm).await;
            }
            return Ok(());
        }
        if planned.cancel && ctx.tasks.cancel_all(&key) > 0 {
            info!("suspended or invalid: cancelled running copies");
        }
        if planned.start.is_empty() {
            return Ok(());
        }
        let creds = self.credentials(ctx).await;
        for (region, resync) in &planned.start {
            let Some(dest) = self.spec.destinations.iter().find(|d| &d.region == region).cloned() else {
                continue;
            };
            let progress = Arc::new(Progress::default());
            let (oci, spec, creds, pr) = (ctx.oci.clone(), self.spec.clone(), creds.clone(), progress.clone());
            let bytes = ctx.metrics.bytes_transferred.with_label_values(&["oci"]);
            ctx.tasks.start(&key, region, *resync, progress, async move {
                let r = match creds {
                    Ok(c) => oci.copy_to(&spec, &dest, &c, &pr).await,
                    Err(e) => Err(OciError::Auth(e)),
                };
                if let Ok(report) = &r {
                    bytes.inc_by(report.bytes_uploaded);
                }
                r
            });
        }
        Ok(())
    }
    fn blocked_status(&self, message: &str, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        // The destination the message is about (cleanup messages name their region first).
        for d in st.destinations.iter_mut() {
            let r = &d.region;
            if message.starts_with(&format!("{r}: ")) || message.contains(&format!(" in {r}: ")) {
                d.message = Some(format!("deletion blocked: {message}"));
            }
        }
        st.conditions = blocked_conditions(&st.conditions, message, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, ctx: &Context) -> Result<String> {
        if let Some(p) = ctx.providers.vm(self.spec.provider.kind) {
            let acct = self.account(ctx).await;
            return ctx.vm.cleanup(self, p.as_ref(), acct).await.map_err(Error::Provider);
        }
        let cancelled = ctx.tasks.cancel_all(&key_of(self));
        ctx.tasks.forget(&key_of(self));
        let mut note = format!("deletionPolicy {:?}", self.spec.deletion_policy);
        if cancelled > 0 {
            note.push_str(&format!("; cancelled {cancelled} copies in flight"));
        }
        if self.spec.deletion_policy == DeletionPolicy::Delete && self.spec.provider.kind == ProviderKind::Oci {
            let creds = self.credentials(ctx).await.map_err(Error::Provider)?;
            let mut removed = Vec::new();
            for st in self.status.iter().flat_map(|s| s.destinations.iter()) {
                let (Some(digest), Some(dest)) = (
                    &st.digest,
                    self.spec.destinations.iter().find(|d| d.region == st.region),
                ) else {
                    continue;
                };
                match ctx.oci.delete_copy(&self.spec, dest, digest, &creds).await {
                    Ok(_) => removed.push(st.region.clone()),
                    Err(OciError::Http {
                        status: 405 | 403 | 401,
                        ..
                    }) => {
                        note.push_str(&format!(
                            "; {}: the registry does not allow deletes, copy kept",
                            st.region
                        ));
                    }
                    Err(e) => return Err(Error::Provider(format!("removing the copy in {}: {e}", st.region))),
                }
            }
            if !removed.is_empty() {
                note.push_str(&format!("; removed the copies in {}", removed.join(", ")));
            }
        } else if self.spec.deletion_policy == DeletionPolicy::Retain {
            note.push_str("; destination copies kept");
        }
        Ok(note)
    }
}

async fn secret_credentials(
    ctx: &Context,
    ns: &str,
    r: Option<&crate::api::v1alpha1::SecretRef>,
) -> Result<SecretCredentials, String> {
    let Some(r) = r else {
        return Ok(SecretCredentials::default());
    };
    let data = secret_data(ctx, ns, &r.name).await?;
    SecretCredentials::from_data(&data).map_err(|e| format!("Secret {}: {e}", r.name))
}

async fn secret_data(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api
        .get(name)
        .await
        .map_err(|e| format!("reading Secret {name}: {}", kube_reason(&e)))?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

impl ReplicaInstance {
    fn is_oci_open(&self, providers: &provider::Registry) -> (Gate, bool) {
        let kind = self.spec.primary.provider;
        let implemented = providers.replica(kind).is_some();
        let gate = plan::gate(
            validation::replica_instance(&self.spec),
            kind.as_str(),
            implemented,
            self.spec.suspend,
        );
        let open = gate == Gate::Open && kind == ReplicaProvider::Oci;
        (gate, open)
    }
    async fn replica_credentials(&self, ctx: &Context) -> Result<SecretCredentials, String> {
        let r = self
            .spec
            .replica
            .as_ref()
            .and_then(|r| r.credentials_secret_ref.as_ref());
        secret_credentials(ctx, &self.namespace().unwrap_or_default(), r).await
    }

    /// The TCR account: the primary's credentials Secret (`secretId`, `secretKey`, optional
    /// `token`, optional `endpoint` override of `https://tcr.tencentcloudapi.com`).
    async fn tencent_account(&self, ctx: &Context) -> Result<crate::image_replication::vm::Account, String> {
        let ns = self.namespace().unwrap_or_default();
        let secret = match &self.spec.primary.credentials_secret_ref {
            Some(r) => secret_data(ctx, &ns, &r.name).await?,
            None => return Err("spec.primary.credentialsSecretRef is required for tencent".into()),
        };
        let endpoint = secret
            .get("endpoint")
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|e| !e.is_empty());
        Ok(crate::image_replication::vm::Account {
            secret,
            endpoint,
            agency: None,
        })
    }

    fn primary_host(&self) -> Option<String> {
        crate::oci::RegistryAddr::parse(self.spec.primary.registry.as_deref()?)
            .ok()
            .map(|a| a.host)
    }
}

impl Managed for ReplicaInstance {
    type Status = ReplicaInstanceStatus;
    const CONTROLLER: &'static str = "replica_instance";
    fn current_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions_of(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    async fn plan(&self, ctx: &Context, now: &Time) -> Planned<Self::Status> {
        let (gate, open) = self.is_oci_open(&ctx.providers);
        let key = key_of(self);
        if gate == Gate::Open && self.spec.primary.provider == ReplicaProvider::Tencent {
            let seen = match self.tencent_account(ctx).await {
                Ok(acct) => {
                    let id = self.spec.primary.instance_id.clone().unwrap_or_default();
                    ctx.tcr
                        .observe(&acct, &id, &self.spec.primary.region, &self.spec.region)
                        .await
                }
                Err(e) => Err(crate::image_replication::vm::ProviderError::transient(e)),
            };
            let p = crate::replica_instance::tcr::plan(self, seen.as_ref(), now);
            return Planned {
                status: p.status,
                requeue: p.requeue,
                events: p.events,
                replica_create: p.create,
                ..Planned::settled(ReplicaInstanceStatus::default())
            };
        }
        if !open {
            let implemented = gate != Gate::ProviderNotImplemented(self.spec.primary.provider.as_str());
            let mut planned = Planned::settled(plan::replica_instance_status(self, implemented, now));
            planned.cancel = matches!(gate, Gate::Suspended | Gate::Invalid(_));
            return planned;
        }
        if let Some(host) = self.primary_host() {
            ctx.notifications.subscribe(&host, &key);
        }
        let view = ctx.sync_tasks.collect(&key, now);
        if let SyncView::Finished(Ok(r)) = &view {
            let m = &ctx.metrics;
            m.replica_artifacts.with_label_values(&["copied"]).inc_by(r.copied);
            m.replica_artifacts.with_label_values(&["deleted"]).inc_by(r.deleted);
            m.replica_artifacts
                .with_label_values(&["failed"])
                .inc_by(r.failures.len() as u64);
            m.replica_artifacts
                .with_label_values(&["conflict"])
                .inc_by(r.conflicts.len() as u64);
            m.bytes_transferred.with_label_values(&["oci_replica"]).inc_by(r.bytes);
        }
        let pending = ctx.notifications.pending(&key);
        let interval = validation::parse_duration(&self.spec.sync.interval).unwrap_or(Duration::from_secs(600));
        let synced_before = self.status.as_ref().is_some_and(|s| s.last_full_sync_time.is_some());
        let last_full = ctx.sync_tasks.last_full(&key, synced_before, now, interval);
        let p = crate::replica_instance::plan::replica_plan(
            self,
            &view,
            pending.as_ref().map(|(r, t)| (r, t)),
            last_full.as_ref(),
            now,
            interval,
        );
        ctx.set_replica_gauges(&key, p.status.lag_seconds.unwrap_or(0), p.status.pending.unwrap_or(0));
        Planned {
            status: p.status,
            requeue: p.requeue,
            events: p.events,
            sync: p.start,
            ..Planned::settled(ReplicaInstanceStatus::default())
        }
    }
    async fn act(&self, ctx: &Context, planned: &Planned<Self::Status>) -> Result<()> {
        let key = key_of(self);
        if planned.replica_create {
            let acct = self.tencent_account(ctx).await.map_err(Error::Provider)?;
            let id = self.spec.primary.instance_id.clone().unwrap_or_default();
            match ctx
                .tcr
                .create(&acct, &id, &self.spec.primary.region, &self.spec.region)
                .await
            {
                Ok(r) => info!(replica = r, "TCR replica instance created"),
                Err(e) => {
                    warn!(error = %e, "creating the TCR replica instance failed; will look again");
                    let note = format!("creating the replica in {}: {e}", self.spec.region);
                    publish(ctx, self, true, "CreateReplicaFailed", note).await;
                }
            }
            return Ok(());
        }
        if planned.cancel && ctx.sync_tasks.cancel(&key) {
            info!("suspended or invalid: cancelled the running sync");
        }
        let Some(start) = &planned.sync else { return Ok(()) };
        let repos = match start {
            SyncStart::Full => {
                ctx.notifications.take(&key); // a full sync covers them
                None
            }
            SyncStart::Repositories(_) => ctx.notifications.take(&key).map(|(r, _)| r),
        };
        let ns = self.namespace().unwrap_or_default();
        let pc = secret_credentials(ctx, &ns, self.spec.primary.credentials_secret_ref.as_ref()).await;
        let rc = self.replica_credentials(ctx).await;
        let progress = Arc::new(SyncProgress::default());
        let (syncer, spec, pr) = (ctx.syncer.clone(), self.spec.clone(), progress.clone());
        let full = repos.is_none();
        ctx.sync_tasks.start(&key, full, progress, async move {
            let (pc, rc) = (pc.map_err(OciError::Auth)?, rc.map_err(OciError::Auth)?);
            syncer.sync(&spec, repos, &pc, &rc, &pr).await
        });
        Ok(())
    }
    fn blocked_status(&self, message: &str, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        st.conditions = blocked_conditions(&st.conditions, message, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, ctx: &Context) -> Result<String> {
        let key = key_of(self);
        let cancelled = ctx.sync_tasks.cancel(&key);
        ctx.sync_tasks.forget(&key);
        ctx.notifications.unsubscribe(&key);
        ctx.set_replica_gauges(&key, 0, 0);
        let mut note = format!("deletionPolicy {:?}", self.spec.deletion_policy);
        if cancelled {
            note.push_str("; cancelled the running sync");
        }
        match (self.spec.primary.provider, self.spec.deletion_policy) {
            (ReplicaProvider::Tencent, DeletionPolicy::Delete) => {
                let acct = self.tencent_account(ctx).await.map_err(Error::Provider)?;
                let id = self.spec.primary.instance_id.clone().unwrap_or_default();
                let gone = ctx
                    .tcr
                    .delete(&acct, &id, &self.spec.primary.region, &self.spec.region)
                    .await
                    .map_err(|e| Error::Provider(format!("deleting the TCR replica instance: {e}")))?;
                match gone {
                    Some(r) => note.push_str(&format!(
                        "; deleted replica instance {r} of {id} in {} (the primary is never touched)",
                        self.spec.region
                    )),
                    None => note.push_str("; no replica instance to delete"),
                }
            }
            (ReplicaProvider::Oci, DeletionPolicy::Delete) => {
                let rc = self.replica_credentials(ctx).await.map_err(Error::Provider)?;
                let n = ctx
                    .syncer
                    .remove_replicated(&self.spec, &rc)
                    .await
                    .map_err(|e| Error::Provider(format!("removing replicated content: {e}")))?;
                note.push_str(&format!("; removed {n} replicated artifacts from the replica"));
            }
            (_, DeletionPolicy::Retain) => note.push_str("; the replica's content is kept"),
        }
        Ok(note)
    }
}

const API_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<T>(what: &'static str, f: impl Future<Output = Result<T, kube::Error>>) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, f).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout(what)),
    }
}

async fn publish<K: Managed>(ctx: &Context, obj: &K, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_string(),
        note: Some(crate::redact::message(&note)),
        action: "Reconcile".into(),
        secondary: None,
    };
    // An Event that cannot be written must not fail the reconcile.
    if let Err(e) = ctx.events.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Write an object's status (server-side apply on the status subresource).
async fn write_status<K: Managed>(obj: &K, ctx: &Context, status: &K::Status) -> Result<()> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    timed(
        "status patch",
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        ),
    )
    .await?;
    Ok(())
}

async fn apply<K: Managed>(obj: Arc<K>, ctx: &Context) -> Result<Action> {
    let now = Time(Timestamp::now());
    let mut planned = obj.plan(ctx, &now).await;
    // Remote text in messages: bounded and without credentials, before it is compared.
    planned.status = crate::redact::status(planned.status);
    let old = obj.current_status();
    if old != Some(&planned.status) {
        write_status(obj.as_ref(), ctx, &planned.status).await?;
        let empty: &[Condition] = &[];
        let before = old.map(K::conditions_of).unwrap_or(empty);
        let headline = plan::announcement(before, K::conditions_of(&planned.status));
        for a in planned.events.iter().chain(headline.iter()) {
            info!(reason = %a.reason, warning = a.warning, "state changed");
            publish(ctx, obj.as_ref(), a.warning, &a.reason, a.note.clone()).await;
        }
    }
    // Only now that the status says what is under way does the work start.
    obj.act(ctx, &planned).await?;
    Ok(planned
        .requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// Run the cleanup. One that cannot finish yet keeps the finalizer: the status says why and
/// what to do (a Warning Event when the reason changes), and it is tried again with backoff.
async fn cleanup<K: Managed>(obj: Arc<K>, ctx: &Context) -> Result<Action> {
    match obj.cleanup(ctx).await {
        Ok(note) => {
            publish(ctx, obj.as_ref(), false, "CleanupComplete", note).await;
            Ok(Action::await_change())
        }
        Err(Error::Provider(message) | Error::CleanupBlocked(message)) => {
            let now = Time(Timestamp::now());
            let status = crate::redact::status(obj.blocked_status(&message, &now));
            if obj.current_status() != Some(&status) {
                write_status(obj.as_ref(), ctx, &status).await?;
                publish(ctx, obj.as_ref(), true, "DeletionBlocked", message.clone()).await;
            }
            Err(Error::CleanupBlocked(message))
        }
        Err(e) => Err(e),
    }
}

/// Whether a reconcile error is a cleanup that cannot finish yet (not a failure of ours).
fn cleanup_blocked(err: &Error) -> bool {
    matches!(err, Error::CleanupBlocked(_))
        || matches!(err, Error::Finalizer(f) if matches!(f.as_ref(), kube::runtime::finalizer::Error::CleanupFailed(Error::CleanupBlocked(_))))
}

/// The annotation naming the installation of the operator that reconciles an object.
pub const INSTALLATION_ANNOTATION: &str = "replication.imageops.io/installation";

/// Whose object this is.
enum Claim<K> {
    /// Ours; with the object as the claim left it, when this reconcile claimed it.
    Ours(Option<K>),
    /// Another installation's (named).
    Elsewhere(String),
    /// The object changed while we claimed it: read it again.
    Raced,
}

/// Claim an object for this installation, or find it claimed by another. The claim is one
/// merge patch that names this installation and adds the finalizer together (the write the
/// finalizer costs anyway), conditional on the resourceVersion it read: of two installations
/// racing for a new object exactly one wins, and the other sees the winner's name on its next
/// read. One write per object, ever (none at rest).
async fn claim<K: Managed>(api: &Api<K>, obj: &K, ctx: &Context) -> Result<Claim<K>> {
    let ours = ctx.installation.as_str();
    match obj.annotations().get(INSTALLATION_ANNOTATION) {
        Some(o) if o == ours => return Ok(Claim::Ours(None)),
        Some(o) if !ctx.adopt && !o.is_empty() => return Ok(Claim::Elsewhere(o.clone())),
        // Not claimed and already going: let the finalizer (if ours) run.
        None if obj.meta().deletion_timestamp.is_some() => return Ok(Claim::Ours(None)),
        _ => {}
    }
    let mut finalizers = obj.finalizers().to_vec();
    if obj.meta().deletion_timestamp.is_none() && !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.to_string());
    }
    // A merge patch that carries the resourceVersion it read is refused (409) if the object
    // changed since: the API server's own precondition (and what makes replacing the
    // finalizer list safe).
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "annotations": {INSTALLATION_ANNOTATION: ours},
        "finalizers": finalizers,
    }});
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(claimed) => Ok(Claim::Ours(Some(claimed))),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Claim::Raced),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Reconcile one object: claim it for this installation, then finalizer, then apply or cleanup.
#[instrument(skip(obj, ctx), fields(controller = K::CONTROLLER))]
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(K::CONTROLLER);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let key = key_of(obj.as_ref());
    let obj = match claim(&api, obj.as_ref(), &ctx).await? {
        Claim::Ours(None) => obj,
        // Go on with the object as claimed (its finalizer is in place).
        Claim::Ours(Some(claimed)) => Arc::new(claimed),
        Claim::Raced => return Ok(Action::requeue(Duration::from_secs(1))),
        Claim::Elsewhere(other) => {
            ctx.metrics.owned_elsewhere.with_label_values(&[K::CONTROLLER]).inc();
            let first = ctx.elsewhere.lock().expect("elsewhere lock").insert(key.clone());
            if first {
                let note = format!(
                    "installation {other} reconciles this object, not {} (two installations watch this namespace); this one leaves it alone. To move it here, remove the annotation {INSTALLATION_ANNOTATION} or run this installation with --adopt-objects",
                    ctx.installation
                );
                warn!(object = %key, owner = %other, "object owned by another installation; left alone");
                publish(&ctx, obj.as_ref(), true, "OwnedByAnotherInstallation", note).await;
            }
            return Ok(Action::await_change());
        }
    };
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(o, &ctx).await,
            FinalizerEvent::Cleanup(o) => cleanup(o, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// Failed reconciles back off per object; an invalid spec waits for a change.
pub fn error_policy<K: Managed>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    let delay = ctx.next_backoff(&key);
    if cleanup_blocked(err) {
        ctx.metrics.cleanup_blocked.with_label_values(&[K::CONTROLLER]).inc();
        info!(object = %key, error = %err, retry_in = ?delay, "delete waits for its cleanup");
        return Action::requeue(delay);
    }
    ctx.metrics.reconcile_failure(K::CONTROLLER, err.category());
    warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn api_for<K: Managed>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Turn `namespace/name` keys into object references for `reconcile_on`.
fn key_stream<K: Managed>(
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<K>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        let key = rx.recv().await?;
        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
        Some((kube::runtime::reflector::ObjectRef::<K>::new(name).within(ns), rx))
    })
}

async fn poll_ready<F, Fut, T, E>(mut wait: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), wait()).await {
            return;
        }
    }
}

fn log<T, E: std::fmt::Display>(r: Result<T, E>) -> futures::future::Ready<()> {
    if let Err(e) = r {
        warn!(error = %e, "controller stream error");
    }
    futures::future::ready(())
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    crate::server::leader::wait_true(&mut stop).await;
}

/// Run both controllers until `stop` turns true; marks `health` ready once both watches synced.
/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A controller whose cache keeps the objects without their managedFields and without the
/// `kubectl apply` annotation: the operator reads neither (status is written with server-side
/// apply, finalizers with a JSON patch), and at thousands of objects they are a large share of
/// its memory.
fn trimmed_controller<K: Managed>(api: Api<K>) -> Controller<K> {
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, reader)
}

pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    health: Arc<Health>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = ControllerConfig::default().concurrency(concurrency);
    let ns = namespace.as_deref();
    // Copies in flight before a restart hold their quota slots before anything new starts.
    match api_for::<ImageReplication>(&ctx.client, ns)
        .list(&Default::default())
        .await
    {
        Ok(list) => list.items.iter().for_each(|o| ctx.vm.seed(o)),
        Err(e) => warn!(error = %e, "could not list ImageReplications to seed the copy quota"),
    }
    let ir = trimmed_controller(api_for::<ImageReplication>(&ctx.client, ns))
        .with_config(cfg.clone())
        .graceful_shutdown_on(stopped(stop.clone()));
    let ri = trimmed_controller(api_for::<ReplicaInstance>(&ctx.client, ns))
        .with_config(cfg)
        .graceful_shutdown_on(stopped(stop.clone()));
    let (ir_rx, ri_rx) = ctx
        .receivers
        .lock()
        .expect("receivers lock")
        .take()
        .expect("controllers run once");
    let ir = ir.reconcile_on(key_stream::<ImageReplication>(ir_rx));
    let ri = ri.reconcile_on(key_stream::<ReplicaInstance>(ri_rx));
    let (ir_store, ri_store) = (ir.store(), ri.store());
    let ready = tokio::spawn(async move {
        // kube-runtime's store readiness wakes only its most recent waiter (the controller's own
        // applier waits on it too), so poll it again until it reports ready.
        poll_ready(|| ir_store.wait_until_ready()).await;
        poll_ready(|| ri_store.wait_until_ready()).await;
        info!("watches synced; ready");
        health.set_ready();
    });
    let a = ir
        .run(
            reconcile::<ImageReplication>,
            error_policy::<ImageReplication>,
            ctx.clone(),
        )
        .for_each(log);
    let b = ri
        .run(
            reconcile::<ReplicaInstance>,
            error_policy::<ReplicaInstance>,
            ctx.clone(),
        )
        .for_each(log);
    futures::future::join(a, b).await;
    ready.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let d: Vec<u64> = (1..=9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(d, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
