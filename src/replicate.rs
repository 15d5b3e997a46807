//! `image-replication-operator replicate -f FILE...`: reconcile manifests with no Kubernetes API,
//! for CI pipelines and first tries. Uses the same validation, planning and copy engine as the
//! controllers; prints live progress; succeeds only when every object is Ready.

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
use crate::api::v1alpha1::{DestinationPhase, ImageReplication, ReplicaInstance};
use crate::image_replication::oci::{OciReplicator, SecretCredentials};
use crate::image_replication::vm::engine::{Settings, VmEngine};
use crate::image_replication::vm::{Account, ImageService};
use crate::oci::Progress;
use crate::plan::{self, Gate};
use crate::tasks::Tasks;
use crate::validation;

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
    pub secrets: HashMap<String, SecretCredentials>,
    /// The Secrets' raw data (VM providers read their own keys).
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
                    let creds = SecretCredentials::from_data(&data).map_err(|e| format!("Secret {name}: {e}"))?;
                    m.secrets.insert(name.clone(), creds);
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

/// Reconcile every object; true when all are Ready. Progress goes to `out`.
pub async fn run(m: Manifests, opts: &Options, out: &mut (dyn Write + Send)) -> bool {
    let replicator = Arc::new(OciReplicator::default());
    let syncer = Arc::new(crate::replica_instance::oci::ReplicaSyncer::default());
    let tcr = Arc::new(crate::replica_instance::tcr::Tcr::default());
    let providers = crate::provider::Registry::builtin()
        .with_image(replicator.clone())
        .with_replica(syncer.clone())
        .with_replica(tcr.clone());
    if let Some(p) = &opts.blob_cache {
        load_blob_cache(p, &[&replicator.engine, &syncer.engine]);
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let w2 = wake.clone();
    let tasks = Arc::new(Tasks::new(Arc::new(move |_| w2.notify_one())));
    let mut all_ready = true;

    for r in &m.replica_instances {
        let ready = if !replica_gate(r, &providers, out) {
            false
        } else if r.spec.primary.provider == crate::api::v1alpha1::ReplicaProvider::Tencent {
            tencent_once(r, &tcr, &m.secret_data, opts.attempts, out).await
        } else {
            replica_once(r, &syncer, &m.secrets, opts.attempts, out).await
        };
        if !ready {
            all_ready = false;
        }
    }

    let mut objects: Vec<ImageReplication> = m.image_replications;
    for o in objects.iter_mut() {
        o.metadata.generation.get_or_insert(1);
    }
    let mut live: Vec<usize> = Vec::new();
    let mut vm_live = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let spec = &o.spec;
        let g = plan::gate(
            validation::image_replication(spec),
            spec.provider.kind.as_str(),
            providers.has_image(spec.provider.kind),
            spec.suspend,
        );
        if let Some(p) = providers.vm(spec.provider.kind)
            && g == Gate::Open
        {
            vm_live.push((i, p));
            continue;
        }
        if g != Gate::Open {
            let (reason, msg) = describe_gate(&g);
            let _ = writeln!(out, "ImageReplication {}: not Ready: {reason}: {msg}", o.name_any());
            all_ready = false;
            continue;
        }
        live.push(i);
    }

    oci_run(&mut objects, &live, &replicator, &tasks, &wake, &m.secrets, opts, out).await;

    if !vm_live.is_empty() {
        let secrets = &m.secret_data;
        let mut vm_objects: Vec<(ImageReplication, Arc<dyn ImageService>)> =
            vm_live.into_iter().map(|(i, p)| (objects[i].clone(), p)).collect();
        all_ready &= vm_run(&mut vm_objects, secrets, opts, out).await;
    }

    for &i in &live {
        let o = &objects[i];
        let st = o.status.clone().unwrap_or_default();
        let what = format!("ImageReplication {}", o.name_any());
        all_ready &= report(out, &what, &st.conditions, &st.summary.unwrap_or_default());
    }
    if let Some(p) = &opts.blob_cache {
        save_blob_cache(p, &[&replicator.engine, &syncer.engine], out);
    }
    print_upload_trouble(&replicator.budgets, &syncer.budgets, out);
    all_ready
}

/// Drive the oci ImageReplications (`live`: their indexes in `objects`) until none has work
/// left: plan each, start its copies, print each destination's line when it changes.
#[allow(clippy::too_many_arguments)]
async fn oci_run(
    objects: &mut [ImageReplication],
    live: &[usize],
    replicator: &Arc<OciReplicator>,
    tasks: &Arc<Tasks>,
    wake: &tokio::sync::Notify,
    secrets: &HashMap<String, SecretCredentials>,
    opts: &Options,
    out: &mut (dyn Write + Send),
) {
    let mut last_line: HashMap<(usize, String), String> = HashMap::new();
    let never = Duration::from_secs(365 * 24 * 3600);
    loop {
        let mut busy = false;
        for &i in live {
            let o = &mut objects[i];
            let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
            let now = Time(Timestamp::now());
            let view = tasks.collect(&key, &now);
            let p = crate::image_replication::plan::oci_plan(o, &view, &HashMap::new(), &now, never, opts.attempts);
            o.status = Some(p.status.clone());
            let creds = o
                .spec
                .provider
                .credentials_secret_ref
                .as_ref()
                .and_then(|s| secrets.get(&s.name).cloned())
                .unwrap_or_default();
            for (region, _) in &p.start {
                let st = p.status.destinations.iter().find(|d| &d.region == region);
                if st.is_some_and(|d| d.attempts >= opts.attempts) {
                    continue;
                }
                let Some(dest) = o.spec.destinations.iter().find(|d| &d.region == region).cloned() else {
                    continue;
                };
                let (rep, spec, creds, progress) = (
                    replicator.clone(),
                    o.spec.clone(),
                    creds.clone(),
                    Arc::new(Progress::default()),
                );
                let pr = progress.clone();
                tasks.start(&key, region, false, progress, async move {
                    rep.copy_to(&spec, &dest, &creds, &pr).await
                });
                busy = true;
            }
            for d in &p.status.destinations {
                let up_to_date = matches!(
                    view.get(&d.region),
                    Some(plan::TaskView::Succeeded { up_to_date: true, .. })
                );
                let line = if up_to_date {
                    format!("up to date {}", d.digest.as_deref().unwrap_or(""))
                } else {
                    progress_line(d)
                };
                if last_line.get(&(i, d.region.clone())) != Some(&line) {
                    let _ = writeln!(out, "{}/{}: {line}", o.name_any(), d.region);
                    last_line.insert((i, d.region.clone()), line);
                }
                if d.phase == DestinationPhase::Copying
                    || (d.phase == DestinationPhase::Failed && d.attempts < opts.attempts)
                {
                    busy = true;
                }
            }
        }
        if !busy && tasks.is_empty() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
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

/// One full sync of a ReplicaInstance (oci), planned and reported like the controller does.
async fn replica_once(
    r: &ReplicaInstance,
    syncer: &crate::replica_instance::oci::ReplicaSyncer,
    secrets: &HashMap<String, SecretCredentials>,
    attempts: i32,
    out: &mut (dyn Write + Send),
) -> bool {
    let spec = &r.spec;
    let creds =
        |s: Option<&crate::api::v1alpha1::SecretRef>| s.and_then(|s| secrets.get(&s.name).cloned()).unwrap_or_default();
    let pc = creds(spec.primary.credentials_secret_ref.as_ref());
    let rc = creds(spec.replica.as_ref().and_then(|x| x.credentials_secret_ref.as_ref()));
    let _ = writeln!(
        out,
        "{}: full sync from {} to {}",
        r.name_any(),
        spec.primary.registry.as_deref().unwrap_or(""),
        spec.replica.as_ref().and_then(|x| x.registry.as_deref()).unwrap_or("")
    );
    // Up to `attempts` passes: a pass after failures copies only what is still missing (one
    // HEAD per artifact already in sync), so transient failures converge within one run.
    let mut earlier = crate::replica_instance::oci::SyncReport::default();
    let mut attempt = 1;
    let outcome = loop {
        let res = sync_printing_progress(syncer, r, &pc, &rc, out).await;
        let again = attempt < attempts.max(1)
            && match &res {
                Ok(rep) => !rep.failures.is_empty(),
                Err(e) => e.is_retryable(),
            };
        if !again {
            break res.map(|mut rep| {
                rep.copied += earlier.copied;
                rep.deleted += earlier.deleted;
                rep.bytes += earlier.bytes;
                rep
            });
        }
        let why = match &res {
            Ok(rep) => format!("{} of {} artifacts failed", rep.failures.len(), rep.artifacts),
            Err(e) => e.to_string(),
        };
        if let Ok(rep) = res {
            print_failures(out, &format!("{}: pass {attempt}", r.name_any()), &rep.failures);
            earlier.copied += rep.copied;
            earlier.deleted += rep.deleted;
            earlier.bytes += rep.bytes;
        }
        let _ = writeln!(out, "{}: pass {attempt}: {why}; syncing again", r.name_any());
        tokio::time::sleep(Duration::from_secs(u64::from(attempt.unsigned_abs().min(5)))).await;
        attempt += 1;
    }
    .map_err(|e| (e.reason().to_string(), e.to_string()));
    let mut obj = r.clone();
    obj.metadata.generation.get_or_insert(1);
    let now = Time(Timestamp::now());
    let view = crate::replica_instance::oci::SyncView::Finished(outcome);
    let p = crate::replica_instance::plan::replica_plan(&obj, &view, None, None, &now, Duration::from_secs(3600));
    for e in &p.events {
        let _ = writeln!(out, "{}: {}: {}", r.name_any(), e.reason, e.note);
    }
    // Every failed artifact, with its reason and the registry's message (status keeps only the
    // most recent ones).
    if let crate::replica_instance::oci::SyncView::Finished(Ok(rep)) = &view {
        print_failures(out, &r.name_any(), &rep.failures);
    }
    let what = format!("ReplicaInstance {}", r.name_any());
    let detail = format!("{} artifacts in sync", p.status.artifacts.unwrap_or(0));
    report(out, &what, &p.status.conditions, &detail)
}

/// Whether a ReplicaInstance may start (valid, provider built, not suspended); says why not.
fn replica_gate(r: &ReplicaInstance, providers: &crate::provider::Registry, out: &mut (dyn Write + Send)) -> bool {
    let spec = &r.spec;
    let g = plan::gate(
        validation::replica_instance(spec),
        spec.primary.provider.as_str(),
        providers.replica(spec.primary.provider).is_some(),
        spec.suspend,
    );
    if g != Gate::Open {
        let (reason, msg) = describe_gate(&g);
        let _ = writeln!(out, "ReplicaInstance {}: not Ready: {reason}: {msg}", r.name_any());
    }
    g == Gate::Open
}

/// How long `replicate -f` waits for a TCR replica instance to be created and in sync.
const TCR_WAIT: Duration = Duration::from_secs(15 * 60);

/// A tencent ReplicaInstance without a cluster: the same observe, pure plan and create the
/// controller runs, repeated until the replica is Ready, the plan is stalled, the cloud refused
/// the create `attempts` times, or `TCR_WAIT` passed. Credentials from the Secret in the files.
async fn tencent_once(
    r: &ReplicaInstance,
    tcr: &crate::replica_instance::tcr::Tcr,
    secrets: &HashMap<String, BTreeMap<String, Vec<u8>>>,
    attempts: i32,
    out: &mut (dyn Write + Send),
) -> bool {
    let (spec, name, what) = (&r.spec, r.name_any(), format!("ReplicaInstance {}", r.name_any()));
    let Some(secret) = spec
        .primary
        .credentials_secret_ref
        .as_ref()
        .and_then(|s| secrets.get(&s.name))
    else {
        let _ = writeln!(
            out,
            "{what}: not Ready: SecretNotFound: spec.primary.credentialsSecretRef names no Secret in the files"
        );
        return false;
    };
    let acct = crate::image_replication::vm::Account {
        secret: secret.clone(),
        endpoint: secret
            .get("endpoint")
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|e| !e.is_empty()),
        agency: None,
    };
    let id = spec.primary.instance_id.clone().unwrap_or_default();
    let mut obj = r.clone();
    obj.metadata.generation.get_or_insert(1);
    let started = std::time::Instant::now();
    let mut refused = 0;
    loop {
        let now = Time(Timestamp::now());
        let seen = tcr.observe(&acct, &id, &spec.primary.region, &spec.region).await;
        let p = crate::replica_instance::tcr::plan(&obj, seen.as_ref(), &now);
        for e in &p.events {
            let _ = writeln!(out, "{name}: {}: {}", e.reason, e.note);
        }
        obj.status = Some(p.status.clone());
        if p.create {
            match tcr.create(&acct, &id, &spec.primary.region, &spec.region).await {
                Ok(replica) => {
                    let _ = writeln!(out, "{name}: created replica instance {replica} in {}", spec.region);
                }
                Err(e) => {
                    refused += 1;
                    let _ = writeln!(
                        out,
                        "{name}: CreateReplicaFailed: creating the replica in {}: {e}",
                        spec.region
                    );
                }
            }
        }
        let conds = &p.status.conditions;
        let done = conditions::is_true(conds, READY) || conditions::is_true(conds, conditions::STALLED);
        if done || refused >= attempts.max(1) || started.elapsed() > TCR_WAIT {
            let detail = format!("replica of {id} in {}", spec.region);
            return report(out, &what, conds, &detail);
        }
        tokio::time::sleep(p.requeue.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5))).await;
    }
}

/// One line per failed artifact: `prefix: failed repo:tag: Reason: the registry's message`.
fn print_failures(out: &mut (dyn Write + Send), prefix: &str, failures: &[crate::replica_instance::oci::Failure]) {
    for f in failures {
        let _ = writeln!(out, "{prefix}: failed {}: {}: {}", f.artifact, f.reason, f.message);
    }
}

/// Seconds between progress lines of a ReplicaInstance sync.
const SYNC_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One sync pass, printing `name: done/total artifacts` every few seconds while it runs (when it
/// moved).
async fn sync_printing_progress(
    syncer: &crate::replica_instance::oci::ReplicaSyncer,
    r: &ReplicaInstance,
    pc: &SecretCredentials,
    rc: &SecretCredentials,
    out: &mut (dyn Write + Send),
) -> Result<crate::replica_instance::oci::SyncReport, crate::oci::OciError> {
    use std::sync::atomic::Ordering::Relaxed;
    let progress = crate::replica_instance::oci::SyncProgress::default();
    let sync = syncer.sync(&r.spec, None, pc, rc, &progress);
    tokio::pin!(sync);
    let mut shown = (0, 0);
    loop {
        tokio::select! {
            res = &mut sync => return res,
            _ = tokio::time::sleep(SYNC_PROGRESS_EVERY) => {
                let now = (progress.done.load(Relaxed), progress.total.load(Relaxed));
                if now.1 > 0 && now != shown {
                    let _ = writeln!(out, "{}: {} of {} artifacts done", r.name_any(), now.0, now.1);
                    shown = now;
                }
            }
        }
    }
}

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

/// Drive VM image copies to the end (every destination Available or Failed for good), printing
/// each destination's changes.
async fn vm_run(
    objects: &mut [(ImageReplication, Arc<dyn ImageService>)],
    secrets: &HashMap<String, BTreeMap<String, Vec<u8>>>,
    opts: &Options,
    out: &mut (dyn Write + Send),
) -> bool {
    let wake = Arc::new(tokio::sync::Notify::new());
    let w2 = wake.clone();
    let settings = Settings {
        max_attempts: opts.attempts,
        poll_min: Duration::from_secs(1),
        poll_max: Duration::from_secs(10),
        resync: Duration::from_secs(365 * 24 * 3600),
        ..Default::default()
    };
    let engine = VmEngine::new(settings, Arc::new(move |_: &str| w2.notify_one()), None);
    let mut last_line: HashMap<(usize, String), String> = HashMap::new();
    let mut done = vec![false; objects.len()];
    while done.iter().any(|d| !d) {
        let mut wait = Duration::from_secs(5);
        for (i, (o, p)) in objects.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let acct = Account {
                secret: o
                    .spec
                    .provider
                    .credentials_secret_ref
                    .as_ref()
                    .and_then(|r| secrets.get(&r.name).cloned())
                    .unwrap_or_default(),
                endpoint: o.spec.provider.endpoint.clone(),
                agency: o.spec.provider.agency.clone(),
            };
            let now = Time(Timestamp::now());
            let plan = engine
                .reconcile(o, &Gate::Open, p.as_ref(), Ok(acct.clone()), &now)
                .await;
            o.status = Some(plan.status.clone());
            for e in &plan.events {
                let _ = writeln!(out, "{}: {}: {}", o.name_any(), e.reason, e.note);
            }
            for d in &plan.status.destinations {
                let line = progress_line(d);
                if last_line.get(&(i, d.region.clone())) != Some(&line) {
                    let _ = writeln!(out, "{}/{}: {line}", o.name_any(), d.region);
                    last_line.insert((i, d.region.clone()), line);
                }
            }
            engine.act(o, p.as_ref(), &acct, &plan).await;
            let settled = plan.status.destinations.iter().all(|d| {
                d.phase == DestinationPhase::Available
                    || (d.phase == DestinationPhase::Failed && d.attempts >= opts.attempts)
            });
            if settled || conditions::is_true(&plan.status.conditions, conditions::STALLED) {
                done[i] = true;
            } else if let Some(r) = plan.requeue {
                wait = wait.min(r);
            }
        }
        if done.iter().any(|d| !d) {
            let _ = tokio::time::timeout(wait, wake.notified()).await;
        }
    }
    let mut all = true;
    for (o, _) in objects.iter() {
        let st = o.status.clone().unwrap_or_default();
        all &= report(
            out,
            &format!("ImageReplication {}", o.name_any()),
            &st.conditions,
            &st.summary.unwrap_or_default(),
        );
    }
    all
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

fn describe_gate(g: &Gate) -> (&'static str, String) {
    match g {
        Gate::Invalid(v) => validation::summarize(v),
        Gate::ProviderNotImplemented(p) => (
            "ProviderNotImplemented",
            format!("provider {p} is not implemented in this version"),
        ),
        Gate::Suspended => ("Suspended", "spec.suspend is true".into()),
        Gate::Open => ("Open", String::new()),
    }
}
