//! The two controllers and the context they share.
//!
//! Each reconcile is a thin shell: claim the object, keep its finalizer, then the kind's
//! [`Managed`] steps — observe (through the providers of the [`Env`]), the pure plan, write
//! status with server-side apply (only when it changed), publish an Event when the headline
//! changed, act — or, for an object being deleted, its cleanup (a cleanup that cannot finish
//! yet is a requeue with the reason in status, not an error). [`Env`] is what the kinds' steps
//! reach (the provider registry, Secrets, metrics); `replicate -f` builds one of its own.

pub mod config_maps;
pub mod events;
pub mod secrets;
pub mod slots;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::conditions;
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, instrument, warn};

use crate::api::v1alpha1::{ImageReplication, ReplicaInstance};
use crate::api::{FIELD_MANAGER, FINALIZER, key_of};
use crate::error::Blocked;
use crate::plan::Announcement;
use crate::replica_instance::oci::notify::Notifications;
use crate::server::http::Health;
use crate::server::metrics::Metrics;
use crate::{Error, Result, plan, provider};
use secrets::Secrets;

/// What a kind's observe and act reach: the providers, where Secrets are read, the metrics.
/// The controllers' [`Context`] holds one; `replicate -f` builds its own (Secrets from the
/// files) and runs the same observe, plan and act.
pub struct Env {
    pub providers: provider::Registry,
    pub secrets: Arc<dyn Secrets>,
    pub metrics: Metrics,
    /// Where `spec.publish` ConfigMaps are written (none without a cluster).
    pub config_maps: Arc<dyn config_maps::ConfigMaps>,
    /// Per object key: what its ConfigMap holds (read once, then what was written).
    pub published: Mutex<HashMap<String, config_maps::Data>>,
    /// Per ReplicaInstance (lag seconds, queued artifacts), for the gauges.
    replica_gauges: Mutex<HashMap<String, (i64, i64)>>,
}

impl Env {
    pub fn new(providers: provider::Registry, secrets: Arc<dyn Secrets>, metrics: Metrics) -> Self {
        Self {
            providers,
            secrets,
            metrics,
            config_maps: Arc::new(config_maps::NoConfigMaps),
            published: Mutex::new(HashMap::new()),
            replica_gauges: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_replica_gauges(&self, key: &str, lag: i64, queued: i64) {
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
}

/// How the controllers' providers are tuned (`run`'s flags).
pub struct Settings {
    /// How often an Available copy is checked for drift.
    pub resync: Duration,
    /// The VM copy engine (limits, polling, drift checks, attempts).
    pub vm: crate::image_replication::vm::engine::Settings,
    /// The notification state (shared with the HTTP endpoint).
    pub notifications: Arc<Notifications>,
    /// Copy slots shared with the other processes of the installation (shards); `None`: the
    /// quota is this process's alone.
    pub slots: Option<Arc<dyn crate::image_replication::vm::slots::Slots>>,
}

/// State shared by both controllers.
pub struct Context {
    pub client: Client,
    pub events: events::Events,
    pub env: Env,
    /// Keys (namespace/name) to reconcile at once: finished copies, finished syncs, notifications.
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

/// Called with a key: sends it to the controller's trigger stream.
fn trigger(tx: tokio::sync::mpsc::UnboundedSender<String>) -> crate::tasks::OnDone {
    Arc::new(move |k: &str| {
        let _ = tx.send(k.to_string());
    })
}

impl Context {
    pub fn new(client: Client, identity: &str, metrics: Metrics, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: "image-replication-operator".into(),
            instance: Some(identity.to_string()),
        };
        let (ir_tx, ir_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (ri_tx, ri_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        settings.notifications.set_trigger(ri_tx.clone());
        let wiring = provider::Wiring {
            resync: settings.resync,
            vm: settings.vm,
            notifications: settings.notifications,
            slots: settings.slots,
            ..provider::Wiring::new(metrics.clone(), trigger(ir_tx), trigger(ri_tx))
        };
        let secrets = Arc::new(secrets::KubeSecrets(client.clone()));
        Self {
            events: events::Events::new(client.clone(), reporter),
            env: Env {
                config_maps: Arc::new(config_maps::KubeConfigMaps(client.clone())),
                ..Env::new(provider::Registry::builtin(&wiring), secrets, metrics)
            },
            client,
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

/// Delay after the n-th consecutive failure (n >= 1): 5 s, 10 s, 20 s, ... capped at 300 s.
pub fn backoff_delay(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.saturating_sub(1).min(6)).min(300))
}

/// The outcome of planning one object: the status to write, when to look again, the Events
/// besides the headline one, and the work `act` starts once the status is written.
pub struct Planned<S, W> {
    pub status: S,
    pub requeue: Option<Duration>,
    /// Per-destination Events, besides the headline one.
    pub events: Vec<Announcement>,
    pub work: W,
    /// The status differs from the one written only by work that this plan starts or that
    /// started moments ago, and the work is safe to run before its status says so (oci copies:
    /// content-addressed, a restart finds what landed): the shell need not write it yet, and
    /// looks again after this long at the latest (or when the work ends). A copy that ends
    /// within it is written once, finished. None: write now.
    pub status_may_wait: Option<Duration>,
}

impl<S, W> Planned<S, W> {
    /// A plan with nothing to announce and no wake-up of its own.
    pub fn new(status: S, work: W) -> Self {
        Self {
            status,
            requeue: None,
            events: Vec::new(),
            work,
            status_may_wait: None,
        }
    }
}

/// What the generic reconcile needs from each kind: three steps, `observe` (all I/O, one
/// snapshot), a pure `plan` of the snapshot and the time, and `act` (start the planned work
/// once its status is written); then the cleanup behind the finalizer.
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
    /// What one reconcile observed.
    type Snapshot: Send + Sync;
    /// What `act` starts or cancels.
    type Work: Send + Sync;
    /// Metric label and log name of the controller.
    const CONTROLLER: &'static str;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions_of(status: &Self::Status) -> &[Condition];
    /// All the I/O of one reconcile: background tasks (finished ones are collected here),
    /// the provider, each Secret read once.
    fn observe(&self, env: &Env, now: &Time) -> impl Future<Output = Self::Snapshot> + Send;
    /// Pure: the same snapshot and time give the same plan.
    fn plan(&self, snapshot: &Self::Snapshot, now: &Time) -> Planned<Self::Status, Self::Work>;
    /// Before the planned status is written: take what the plan granted from what it shares
    /// with other objects and processes (conditional writes). False when another took it
    /// first: nothing is written, and the object is planned again at once.
    fn claim(
        &self,
        _env: &Env,
        _snapshot: &Self::Snapshot,
        _planned: &Planned<Self::Status, Self::Work>,
    ) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Start or cancel work after the planned status is written; returns the Events the work
    /// has to announce (a create the cloud refused).
    fn act(
        &self,
        env: &Env,
        snapshot: &Self::Snapshot,
        planned: &Planned<Self::Status, Self::Work>,
    ) -> impl Future<Output = Vec<Announcement>> + Send;
    /// Cleanup before the finalizer goes; returns the note of the CleanupComplete Event.
    /// `Error::Provider` or `Error::CleanupBlocked`: it cannot finish yet (looked at again).
    fn cleanup(&self, env: &Env) -> impl Future<Output = Result<String>> + Send;
    /// The status while the cleanup cannot finish (`message` says why): Ready=False with
    /// reason DeletionBlocked and the remedy.
    fn blocked_status(&self, blocked: &Blocked, now: &Time) -> Self::Status;
}

/// The conditions of an object whose delete cannot finish yet.
pub(crate) fn blocked_conditions(
    old: &[Condition],
    blocked: &Blocked,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let m = format!(
        "deleting: {blocked}; the object goes once the cleanup succeeds (fix the destination, or set deletionPolicy: Retain to let it go now)"
    );
    let desired = vec![
        conditions::Desired::new(conditions::READY, false, "DeletionBlocked", m.clone()),
        conditions::Desired::new(conditions::RECONCILING, true, "DeletionBlocked", m),
        conditions::Desired::new(conditions::STALLED, false, "DeletionBlocked", ""),
    ];
    conditions::merge(old, &desired, generation, now)
}

const API_TIMEOUT: Duration = Duration::from_secs(30);

/// A plan whose claim was lost is made again after this (the other's writes are then seen).
const CLAIM_LOST: Duration = Duration::from_millis(200);

async fn timed<T>(what: &'static str, f: impl Future<Output = Result<T, kube::Error>>) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, f).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout(what)),
    }
}

pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
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
    let snapshot = obj.observe(&ctx.env, &now).await;
    let mut planned = obj.plan(&snapshot, &now);
    // Remote text in messages: bounded and without credentials, before it is compared.
    planned.status = crate::redact::status(planned.status);
    if !obj.claim(&ctx.env, &snapshot, &planned).await {
        debug!("what the plan granted was taken first; planning again");
        return Ok(Action::requeue(CLAIM_LOST));
    }
    let old = obj.current_status();
    let wait = planned.status_may_wait.filter(|_| old != Some(&planned.status));
    if old != Some(&planned.status) && wait.is_none() {
        write_status(obj.as_ref(), ctx, &planned.status).await?;
        let empty: &[Condition] = &[];
        let before = old.map(K::conditions_of).unwrap_or(empty);
        let headline = plan::announcement(before, K::conditions_of(&planned.status));
        for a in planned.events.iter().chain(headline.iter()) {
            info!(reason = %a.reason, warning = a.warning, "state changed");
            publish(ctx, obj.as_ref(), a.warning, &a.reason, a.note.clone()).await;
        }
    }
    // Only now that the status says what is under way does the work start (or, where the plan
    // lets the status wait, before it: see `Planned::status_may_wait`).
    for a in obj.act(&ctx.env, &snapshot, &planned).await {
        info!(reason = %a.reason, warning = a.warning, "work reported");
        publish(ctx, obj.as_ref(), a.warning, &a.reason, a.note).await;
    }
    let requeue = match (planned.requeue, wait) {
        (Some(r), Some(w)) => Some(r.min(w)),
        (r, w) => r.or(w),
    };
    Ok(requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// Run the cleanup. Done: the CleanupComplete Event is written, then the finalizer goes (a
/// merge patch conditional on the resourceVersion read). One that cannot finish yet keeps the
/// finalizer and is not an error: the status says why and what to do (a Warning Event when the
/// reason changes), it is counted as blocked and looked at again with the object's backoff.
async fn cleanup<K: Managed>(api: &Api<K>, obj: Arc<K>, ctx: &Context) -> Result<Action> {
    let key = key_of(obj.as_ref());
    match obj.cleanup(&ctx.env).await {
        Ok(note) => {
            // The Event first: whoever sees the object gone finds it, and an operator stopped
            // between the two writes cannot lose it (a 409 below repeats it as a series).
            publish(ctx, obj.as_ref(), false, "CleanupComplete", note).await;
            let rest = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
            if !set_finalizers(api, obj.as_ref(), rest).await? {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            ctx.reset_backoff(&key);
            Ok(Action::await_change())
        }
        Err(e) => {
            let blocked = match e {
                Error::CleanupBlocked(b) => b,
                Error::Provider(m) => Blocked::from(m),
                e => return Err(e),
            };
            let message = blocked.to_string();
            let now = Time(Timestamp::now());
            let status = crate::redact::status(obj.blocked_status(&blocked, &now));
            if obj.current_status() != Some(&status) {
                write_status(obj.as_ref(), ctx, &status).await?;
                publish(ctx, obj.as_ref(), true, "DeletionBlocked", message.clone()).await;
            }
            let delay = ctx.next_backoff(&key);
            ctx.env
                .metrics
                .cleanup_blocked
                .with_label_values(&[K::CONTROLLER])
                .inc();
            info!(object = %key, reason = %crate::redact::message(&message), retry_in = ?delay, "delete waits for its cleanup");
            Ok(Action::requeue(delay))
        }
    }
}

/// Replace the object's finalizers with a merge patch conditional on the resourceVersion read.
/// `false`: the object changed meanwhile (409), look again; an object already gone is done.
async fn set_finalizers<K: Managed>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<bool> {
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers,
    }});
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The finalizer: the claim adds it; one removed by hand while the object lives is added back
/// (conditional on the resourceVersion read, as the claim). A deleted object whose finalizer
/// is ours is cleaned up; one without it is left to go.
async fn finalize<K: Managed>(api: &Api<K>, obj: Arc<K>, ctx: &Context) -> Result<Action> {
    let ours = obj.finalizers().iter().any(|f| f == FINALIZER);
    match (obj.meta().deletion_timestamp.is_some(), ours) {
        (false, true) => {
            let action = apply(obj.clone(), ctx).await?;
            ctx.reset_backoff(&key_of(obj.as_ref()));
            Ok(action)
        }
        (false, false) => {
            let mut finalizers = obj.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            // The patch is a change: its watch event reconciles the object again.
            Ok(match set_finalizers(api, obj.as_ref(), finalizers).await? {
                true => Action::await_change(),
                false => Action::requeue(Duration::from_secs(1)),
            })
        }
        (true, true) => cleanup(api, obj, ctx).await,
        (true, false) => Ok(Action::await_change()),
    }
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
    let _timer = ctx.env.metrics.reconcile_timer(K::CONTROLLER);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let key = key_of(obj.as_ref());
    let obj = match claim(&api, obj.as_ref(), &ctx).await? {
        Claim::Ours(None) => obj,
        // Go on with the object as claimed (its finalizer is in place).
        Claim::Ours(Some(claimed)) => Arc::new(claimed),
        Claim::Raced => return Ok(Action::requeue(Duration::from_secs(1))),
        Claim::Elsewhere(other) => {
            ctx.env
                .metrics
                .owned_elsewhere
                .with_label_values(&[K::CONTROLLER])
                .inc();
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
    finalize(&api, obj, &ctx).await
}

/// Failed reconciles back off per object; an invalid spec waits for a change.
pub fn error_policy<K: Managed>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    let delay = ctx.next_backoff(&key);
    ctx.env.metrics.reconcile_failure(K::CONTROLLER, err.category());
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
fn trimmed_controller<K: Managed>(
    api: Api<K>,
    labels: Option<&str>,
    on_leave: impl Fn(&K) + Send + Sync + 'static,
) -> Controller<K> {
    use futures::TryStreamExt;
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let mut cfg = watcher::Config::default();
    if let Some(l) = labels {
        cfg = cfg.labels(l);
    }
    // An object that leaves the watch (deleted, or its labels no longer match this shard's
    // selector: the API server sends it as deleted) is let go.
    let stream = watcher(api, cfg)
        .inspect_ok(move |e| {
            if let watcher::Event::Delete(o) = e {
                on_leave(o);
            }
        })
        .default_backoff()
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, reader)
}

/// What one operator process watches: a namespace (or all) and a label selector (a shard).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub labels: Option<String>,
}

pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    health: Arc<Health>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = ControllerConfig::default().concurrency(concurrency);
    let ns = scope.namespace.as_deref();
    let labels = scope.labels.as_deref();
    let mut lp = kube::api::ListParams::default();
    if let Some(l) = labels {
        lp = lp.labels(l);
    }
    // Copies in flight before a restart hold their quota slots before anything new starts.
    match api_for::<ImageReplication>(&ctx.client, ns).list(&lp).await {
        Ok(list) => list.items.iter().for_each(|o| {
            if let Some(p) = ctx.env.providers.image(o.spec.provider.kind) {
                p.seed(o);
            }
        }),
        Err(e) => warn!(error = %e, "could not list ImageReplications to seed the copy quota"),
    }
    let leaving = ctx.clone();
    let let_go = move |o: &ImageReplication| {
        if let Some(p) = leaving.env.providers.image(o.spec.provider.kind) {
            p.release(o);
        }
    };
    let ir = trimmed_controller(api_for::<ImageReplication>(&ctx.client, ns), labels, let_go)
        .with_config(cfg.clone())
        .graceful_shutdown_on(stopped(stop.clone()));
    let ri = trimmed_controller(api_for::<ReplicaInstance>(&ctx.client, ns), labels, |_| {})
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
