//! `image-replication-operator replicate -f FILE...`: reconcile manifests with no Kubernetes API,
//! for CI pipelines and first tries. Runs each kind's own observe, pure plan and act
//! ([`Managed`]) through the same provider registry as the controllers, with the Secrets from
//! the files and status kept in memory; prints live progress and every Event; succeeds only
//! when every object is Ready.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::conditions::{self, READY};
use crate::api::v1alpha1::{
    DestinationPhase, ImageReplication, ImageReplicationStatus, ReplicaInstance, ReplicaInstanceStatus,
};
use crate::controller::secrets::FileSecrets;
use crate::controller::{Env, Managed};
use crate::image_replication::provider::Snapshot as IrSnapshot;
use crate::image_replication::vm::engine::Settings;
use crate::oci::SecretCredentials;
use crate::plan::{self, TaskView};
use crate::provider::{Registry, Wiring};
use crate::replica_instance::oci::sync::SyncView;
use crate::replica_instance::provider::Snapshot as RiSnapshot;
use crate::server::metrics::Metrics;

/// Options of the command.
#[derive(Clone, Debug)]
pub struct Options {
    /// Copy attempts per destination before giving up.
    pub attempts: i32,
    /// Where blob locations are kept between runs (the cross-repository mount candidates, as
    /// skopeo keeps its blob-info cache); None: nothing is kept.
    pub blob_cache: Option<std::path::PathBuf>,
}

/// Most blob locations kept in the cache file.
const BLOB_CACHE_MAX: usize = 50_000;

/// The default blob cache: `$XDG_CACHE_HOME` or `~/.cache`, `image-replication-operator/blob-locations.json`.
pub fn default_blob_cache() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("image-replication-operator").join("blob-locations.json"))
}

fn load_blob_cache(path: &std::path::Path, engines: &[&crate::oci::Engine]) {
    let Ok(text) = std::fs::read(path) else { return };
    // A damaged cache is only a missed shortcut: start without it.
    if let Ok(l) = serde_json::from_slice::<crate::oci::copy::Locations>(&text) {
        for e in engines {
            e.learn(l.clone());
        }
    }
}

fn save_blob_cache(path: &std::path::Path, engines: &[&crate::oci::Engine], out: &mut (dyn Write + Send)) {
    let mut all = crate::oci::copy::Locations::default();
    for e in engines {
        let l = e.locations();
        all.blobs.extend(l.blobs);
        all.repositories.extend(l.repositories);
    }
    all.blobs.sort();
    all.blobs.dedup();
    all.blobs.truncate(BLOB_CACHE_MAX);
    let tmp = path.with_extension("json.tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&tmp, serde_json::to_vec(&all).unwrap_or_default()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = writeln!(out, "note: blob cache {} not saved: {e}", path.display());
    }
}

/// The manifests of the given files, by kind.
#[derive(Default)]
pub struct Manifests {
    pub image_replications: Vec<ImageReplication>,
    pub replica_instances: Vec<ReplicaInstance>,
    /// The Secrets' data, by name (each provider reads its own keys).
    pub secret_data: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Read every YAML document of the files. Unknown kinds are an error naming the file.
pub fn load(files: &[PathBuf]) -> Result<Manifests, String> {
    let mut m = Manifests::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, doc) in text.split("\n---").enumerate() {
            let v: serde_json::Value = match serde_yaml::from_str(doc) {
                Ok(serde_json::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => return Err(format!("{} document {}: {e}", f.display(), i + 1)),
            };
            let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
            let ctx = |e: serde_json::Error| format!("{} document {} ({kind}): {e}", f.display(), i + 1);
            match kind.as_str() {
                "ImageReplication" => m.image_replications.push(serde_json::from_value(v).map_err(ctx)?),
                "ReplicaInstance" => m.replica_instances.push(serde_json::from_value(v).map_err(ctx)?),
                "Secret" => {
                    let name = v
                        .pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_string();
                    let mut data = BTreeMap::new();
                    for (k, val) in v.get("data").and_then(|d| d.as_object()).into_iter().flatten() {
                        let b = base64::engine::general_purpose::STANDARD
                            .decode(val.as_str().unwrap_or(""))
                            .map_err(|_| format!("{}: Secret {name} data.{k} is not base64", f.display()))?;
                        data.insert(k.clone(), b);
                    }
                    for (k, val) in v.get("stringData").and_then(|d| d.as_object()).into_iter().flatten() {
                        data.insert(k.clone(), val.as_str().unwrap_or("").as_bytes().to_vec());
                    }
                    // Registry credentials that cannot be parsed are an error now, not mid-run.
                    SecretCredentials::from_data(&data).map_err(|e| format!("Secret {name}: {e}"))?;
                    m.secret_data.insert(name, data);
                }
                other => {
                    return Err(format!(
                        "{} document {}: kind {other:?} is not ImageReplication, ReplicaInstance or Secret",
                        f.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    Ok(m)
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Reconcile every object with the controllers' own observe, pure plan and act (through the
/// same provider registry; Secrets from the files, status kept in memory), printing what
/// changes, until nothing more will happen in this run; true when all are Ready.
pub async fn run(m: Manifests, opts: &Options, out: &mut (dyn Write + Send)) -> bool {
    let wake = Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    let on_done: crate::tasks::OnDone = Arc::new(move |_: &str| w.notify_one());
    let never = Duration::from_secs(365 * 24 * 3600);
    let wiring = Wiring {
        resync: never,
        vm: Settings {
            max_attempts: opts.attempts,
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            resync: never,
            ..Default::default()
        },
        // A full sync again as soon as one ends, until one is clean (or the attempts are spent).
        sync_interval: Some(Duration::ZERO),
        ..Wiring::new(Metrics::new(), on_done.clone(), on_done)
    };
    let engines = [&wiring.oci.engine, &wiring.syncer.engine];
    if let Some(p) = &opts.blob_cache {
        load_blob_cache(p, &engines);
    }
    let env = Env::new(
        Registry::builtin(&wiring),
        Arc::new(FileSecrets(m.secret_data)),
        wiring.metrics.clone(),
    );
    let mut all_ready = true;
    for r in m.replica_instances {
        all_ready &= drive(vec![r], &env, &wake, opts.attempts, out).await;
    }
    all_ready &= drive(m.image_replications, &env, &wake, opts.attempts, out).await;
    if let Some(p) = &opts.blob_cache {
        save_blob_cache(p, &engines, out);
    }
    print_upload_trouble(&wiring.oci.budgets, &wiring.syncer.budgets, out);
    all_ready
}

/// What `drive` remembers of one object between its reconciles.
struct Run {
    started: std::time::Instant,
    /// The line last printed per topic (a destination, the sync's progress).
    shown: HashMap<String, String>,
    /// When the sync's progress was last printed.
    progress_at: Option<std::time::Instant>,
    /// Syncs finished (ReplicaInstance oci).
    passes: i32,
    /// Events `act` reported, by reason.
    reported: HashMap<String, i32>,
    done: bool,
}

impl Run {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            shown: HashMap::new(),
            progress_at: None,
            passes: 0,
            reported: HashMap::new(),
            done: false,
        }
    }

    /// Print `line` under `topic` when it differs from the last one.
    fn show(&mut self, out: &mut (dyn Write + Send), topic: &str, line: String) {
        if self.shown.get(topic) != Some(&line) {
            let _ = writeln!(out, "{topic}: {line}");
            self.shown.insert(topic.to_string(), line);
        }
    }
}

/// How `replicate -f` shows a kind and decides that nothing more will happen in this run.
trait Driven: Managed {
    fn set_status(&mut self, status: Self::Status);
    /// `Ready (detail)`.
    fn detail(status: &Self::Status) -> String;
    /// Print what this reconcile changed, and say whether the object is settled: Ready,
    /// stalled, or failed for good within this run's `attempts`.
    fn round(
        &self,
        snap: &Self::Snapshot,
        status: &Self::Status,
        run: &mut Run,
        attempts: i32,
        out: &mut (dyn Write + Send),
    ) -> bool;
}

/// Reconcile the objects (together) until each is settled; print each one's outcome. True when
/// all are Ready.
async fn drive<K: Driven>(
    mut objects: Vec<K>,
    env: &Env,
    wake: &tokio::sync::Notify,
    attempts: i32,
    out: &mut (dyn Write + Send),
) -> bool {
    let mut runs: Vec<Run> = objects.iter().map(|_| Run::new()).collect();
    for o in objects.iter_mut() {
        o.meta_mut().generation.get_or_insert(1);
    }
    while runs.iter().any(|r| !r.done) {
        let mut wait = Duration::from_secs(2);
        for (o, run) in objects.iter_mut().zip(runs.iter_mut()).filter(|(_, r)| !r.done) {
            let now = Time(Timestamp::now());
            let snap = o.observe(env, &now).await;
            let mut planned = o.plan(&snap, &now);
            planned.status = crate::redact::status(planned.status);
            if !o.claim(env, &snap, &planned).await {
                wait = Duration::from_millis(100); // taken first: planned again
                continue;
            }
            let name = o.name_any();
            let before: &[Condition] = o.current_status().map(K::conditions_of).unwrap_or(&[]);
            let headline = plan::announcement(before, K::conditions_of(&planned.status));
            for a in planned.events.iter().chain(headline.iter()) {
                let _ = writeln!(out, "{name}: {}: {}", a.reason, crate::redact::message(&a.note));
            }
            run.done = o.round(&snap, &planned.status, run, attempts, out);
            o.set_status(planned.status.clone());
            if run.done {
                continue;
            }
            for a in o.act(env, &snap, &planned).await {
                *run.reported.entry(a.reason.clone()).or_default() += 1;
                let _ = writeln!(out, "{name}: {}: {}", a.reason, crate::redact::message(&a.note));
            }
            wait = wait.min(planned.requeue.unwrap_or(wait));
        }
        if runs.iter().any(|r| !r.done) {
            let _ = tokio::time::timeout(wait.max(Duration::from_millis(100)), wake.notified()).await;
        }
    }
    let mut all = true;
    for o in &objects {
        let what = format!("{} {}", K::kind(&()), o.name_any());
        all &= match o.current_status() {
            Some(st) => report(out, &what, K::conditions_of(st), &K::detail(st)),
            None => report(out, &what, &[], ""),
        };
    }
    all
}

impl Driven for ImageReplication {
    fn set_status(&mut self, status: ImageReplicationStatus) {
        self.status = Some(status);
    }
    fn detail(status: &ImageReplicationStatus) -> String {
        status.summary.clone().unwrap_or_default()
    }
    /// A line per destination when it changes; settled when every destination is Available or
    /// failed `attempts` times, or the object is gated or stalled.
    fn round(
        &self,
        snap: &IrSnapshot,
        st: &ImageReplicationStatus,
        run: &mut Run,
        attempts: i32,
        out: &mut (dyn Write + Send),
    ) -> bool {
        let name = self.name_any();
        for d in &st.destinations {
            let up_to_date = match snap {
                IrSnapshot::Oci { tasks, .. } => {
                    matches!(tasks.get(&d.region), Some(TaskView::Succeeded { up_to_date: true, .. }))
                }
                _ => false,
            };
            let line = if up_to_date {
                format!("up to date {}", d.digest.as_deref().unwrap_or(""))
            } else {
                progress_line(d)
            };
            run.show(out, &format!("{name}/{}", d.region), line);
        }
        // An account that cannot be read from the files will not change within the run.
        matches!(snap, IrSnapshot::Gated(_) | IrSnapshot::Vm { account: Err(_), .. })
            || conditions::is_true(&st.conditions, conditions::STALLED)
            || st.destinations.iter().all(|d| {
                (d.phase == DestinationPhase::Available
                    && d.shares
                        .iter()
                        .all(|s| crate::image_replication::vm::share::settled(s, attempts)))
                    || (d.phase == DestinationPhase::Failed && d.attempts >= attempts)
            })
    }
}

impl Driven for ReplicaInstance {
    fn set_status(&mut self, status: ReplicaInstanceStatus) {
        self.status = Some(status);
    }
    fn detail(status: &ReplicaInstanceStatus) -> String {
        match status.artifacts {
            Some(n) => format!("{n} artifacts in sync"),
            None => status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
        }
    }
    fn round(
        &self,
        snap: &RiSnapshot,
        st: &ReplicaInstanceStatus,
        run: &mut Run,
        attempts: i32,
        out: &mut (dyn Write + Send),
    ) -> bool {
        let settled =
            conditions::is_true(&st.conditions, READY) || conditions::is_true(&st.conditions, conditions::STALLED);
        match snap {
            RiSnapshot::Gated(_) => true,
            RiSnapshot::Oci { sync, .. } => settled || sync_round(self, sync, run, attempts, out),
            // Without the account nothing will change in this run; a create the cloud refused
            // `attempts` times is not tried again.
            RiSnapshot::Tencent { account, .. } => {
                settled
                    || account.is_none()
                    || run.reported.get("CreateReplicaFailed").copied().unwrap_or(0) >= attempts.max(1)
                    || run.started.elapsed() > TCR_WAIT
            }
        }
    }
}

/// An oci ReplicaInstance's sync as this run sees it: the first line, progress every few
/// seconds, each finished pass. Settled after a clean pass, a failure that another pass will
/// not mend, or `attempts` passes.
fn sync_round(
    r: &ReplicaInstance,
    sync: &SyncView,
    run: &mut Run,
    attempts: i32,
    out: &mut (dyn Write + Send),
) -> bool {
    let name = r.name_any();
    if run.shown.is_empty() {
        let (primary, replica) = (
            r.spec.primary.registry.as_deref().unwrap_or(""),
            r.spec
                .replica
                .as_ref()
                .and_then(|x| x.registry.as_deref())
                .unwrap_or(""),
        );
        run.show(out, &name, format!("full sync from {primary} to {replica}"));
    }
    let last = run.passes + 1 >= attempts.max(1);
    match sync {
        SyncView::Running { done, total, .. } => {
            if *total > 0 && run.progress_at.is_none_or(|t| t.elapsed() >= SYNC_PROGRESS_EVERY) {
                run.show(
                    out,
                    &format!("{name} progress"),
                    format!("{done} of {total} artifacts done"),
                );
                run.progress_at = Some(std::time::Instant::now());
            }
            false
        }
        SyncView::Idle => false,
        SyncView::Finished(outcome) => {
            run.passes += 1;
            let why = match outcome {
                Ok(rep) if rep.failures.is_empty() => return true,
                Ok(rep) => {
                    let prefix = if last {
                        name.clone()
                    } else {
                        format!("{name}: pass {}", run.passes)
                    };
                    print_failures(out, &prefix, &rep.failures);
                    format!("{} of {} artifacts failed", rep.failures.len(), rep.artifacts)
                }
                Err((reason, _)) if !matches!(reason.as_str(), "RateLimited" | "RegistryError" | "ConnectionError") => {
                    return true;
                }
                Err((_, message)) => message.clone(),
            };
            if !last {
                let _ = writeln!(out, "{name}: pass {}: {why}; syncing again", run.passes);
            }
            last
        }
    }
}

/// How long `replicate -f` waits for a TCR replica instance to be created and in sync.
const TCR_WAIT: Duration = Duration::from_secs(15 * 60);

/// One line per failed artifact: `prefix: failed repo:tag: Reason: the registry's message`.
fn print_failures(
    out: &mut (dyn Write + Send),
    prefix: &str,
    failures: &[crate::replica_instance::oci::sync::Failure],
) {
    for f in failures {
        let _ = writeln!(out, "{prefix}: failed {}: {}: {}", f.artifact, f.reason, f.message);
    }
}

/// Seconds between progress lines of a ReplicaInstance sync.
const SYNC_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One destination's state as a progress line.
fn progress_line(d: &crate::api::v1alpha1::DestinationStatus) -> String {
    match d.phase {
        // Nothing known to move yet: the destination is being compared with the source.
        DestinationPhase::Copying if d.bytes_total.unwrap_or(0) == 0 => "checking".into(),
        DestinationPhase::Copying => format!(
            "copying {} / {} ({}%)",
            human(d.bytes_copied.unwrap_or(0) as u64),
            human(d.bytes_total.unwrap_or(0) as u64),
            d.progress_percent.unwrap_or(0)
        ),
        DestinationPhase::Available => format!(
            "available {}",
            d.digest.as_deref().or(d.image_id.as_deref()).unwrap_or("")
        ),
        DestinationPhase::Failed => format!("failed: {}", d.message.as_deref().unwrap_or("")),
        DestinationPhase::Queued => match &d.message {
            Some(m) => format!("queued: {m}"),
            None => "queued".into(),
        },
        other => format!("{other:?}"),
    }
}

/// Per registry host: blob uploads restarted from byte 0, and sessions the registry refused to
/// cancel.
fn print_upload_trouble(image: &crate::oci::Budgets, replica: &crate::oci::Budgets, out: &mut (dyn Write + Send)) {
    for (host, restarts, left) in image.upload_trouble().into_iter().chain(replica.upload_trouble()) {
        if restarts > 0 {
            let _ = writeln!(
                out,
                "{host}: {restarts} blob upload(s) started again from byte 0 (the registry refused to resume them)"
            );
        }
        if left > 0 {
            let _ = writeln!(
                out,
                "warning: {host}: {left} upload session(s) given up could not be cancelled (the registry refused); it keeps their bytes until it purges old uploads (distribution: storage.maintenance.uploadpurging)"
            );
        }
    }
}

/// Print whether an object is Ready (with `detail`) or why not; true when Ready.
fn report(out: &mut (dyn Write + Send), what: &str, conds: &[Condition], detail: &str) -> bool {
    if conditions::is_true(conds, READY) {
        let _ = writeln!(out, "{what}: Ready ({detail})");
        return true;
    }
    let ready = conditions::find(conds, READY);
    let _ = writeln!(
        out,
        "{what}: not Ready: {}: {}",
        ready.map(|c| c.reason.as_str()).unwrap_or("Unknown"),
        ready.map(|c| c.message.as_str()).unwrap_or("")
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_replication::vm::engine::VmEngine;
    use crate::image_replication::vm::fake::FakeCloud;
    use crate::image_replication::vm::provider::Vm;

    fn manifest(secret: &str) -> ImageReplication {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: web, namespace: default}}
spec:
  provider: {{kind: openstack, credentialsSecretRef: {{name: {secret}}}}}
  source: {{region: one, imageId: img-1}}
  destinations: [{{region: two}}]
"#
        ))
        .unwrap()
    }

    /// `replicate -f` reconciles through the provider the registry holds (here an in-memory
    /// cloud: no HTTP), with the credentials Secret from the files: the copy is started once,
    /// polled to Available and reported Ready. A Secret the files do not have is named, the run
    /// ends not Ready, and the cloud is never called.
    #[tokio::test]
    async fn a_vm_copy_runs_through_the_registry_with_the_files_secret() {
        let run = |secret: &'static str| async move {
            let cloud = Arc::new(FakeCloud::new("right"));
            cloud.add_image("one", "img-1", 1 << 20);
            let wake = Arc::new(tokio::sync::Notify::new());
            let w = wake.clone();
            let settings = Settings {
                poll_min: Duration::from_millis(20),
                poll_max: Duration::from_millis(40),
                ..Default::default()
            };
            let engine = Arc::new(VmEngine::new(settings, Arc::new(move |_: &str| w.notify_one()), None));
            let registry = Registry::default().with_image(Arc::new(Vm::new(engine, cloud.clone())));
            let files = [(
                "cloud-creds".to_string(),
                [("password".to_string(), b"right".to_vec())].into(),
            )];
            let env = Env::new(registry, Arc::new(FileSecrets(files.into())), Metrics::new());
            let mut out = Vec::new();
            let ready = tokio::time::timeout(
                Duration::from_secs(20),
                drive(vec![manifest(secret)], &env, &wake, 3, &mut out),
            )
            .await
            .expect("the run ends");
            (ready, String::from_utf8(out).unwrap(), cloud)
        };
        let (ready, text, cloud) = run("cloud-creds").await;
        assert!(ready, "{text}");
        assert!(text.contains("ImageReplication web: Ready (1/1 available)"), "{text}");
        assert!(text.contains("web/two: available"), "{text}");
        assert_eq!(cloud.calls("start_copy"), 1, "{text}");
        assert_eq!(cloud.images_in("two").len(), 1);

        let (ready, text, cloud) = run("missing").await;
        assert!(!ready, "{text}");
        assert!(text.contains("Secret missing is not in the files"), "{text}");
        assert_eq!(cloud.calls("describe") + cloud.calls("start_copy"), 0, "{text}");
    }
}
