//! The copy engine: images, multi-arch indexes (every platform, digests unchanged) and referrers
//! (OCI 1.1 API, else the `sha256-<hex>` tag schema with cosign `.sig`/`.att`/`.sbom` tags).
//!
//! Each blob crosses at most once per destination: skipped when present (HEAD), mounted from
//! another repository of the same registry when known there, otherwise streamed from the source
//! in chunks (never the whole blob in memory) with resume after a broken connection. Every blob
//! and manifest is verified against its digest; a mismatch is an error.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest as _, Sha256};

use super::api::{Manifest, Mount, hex};
use super::client::{OciError, Registry};

/// A byte-rate limit shared by the transfers of one object: each chunk reserves its share of
/// time, so the average rate stays at the limit however many transfers run at once.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: f64,
    next_free: Mutex<Option<std::time::Instant>>,
}

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            next_free: Mutex::new(None),
        }
    }

    /// Reserve `n` bytes at `now`: the instant the transfer may start (pure, for tests).
    pub fn reserve(&self, now: std::time::Instant, n: u64) -> std::time::Instant {
        let mut next = self.next_free.lock().expect("limiter lock");
        let start = next.filter(|t| *t > now).unwrap_or(now);
        *next = Some(start + std::time::Duration::from_secs_f64(n as f64 / self.bytes_per_second));
        start
    }

    /// Wait until `n` more bytes may be sent.
    pub async fn take(&self, n: u64) {
        let start = self.reserve(std::time::Instant::now(), n);
        tokio::time::sleep_until(start.into()).await;
    }
}

/// Tuning of one copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Bytes per PATCH. Default: the whole blob in one streaming PATCH, as skopeo sends it (a
    /// registry reopens its upload for every PATCH, which costs throughput); a cut upload is
    /// resumed from the offset the registry reports either way.
    pub chunk_size: usize,
    /// Blobs transferred at once within one image.
    pub blob_concurrency: usize,
    /// Copy referrers (signatures, attestations, SBOMs).
    pub referrers: bool,
    /// Consecutive failures of one blob transfer before giving up.
    pub max_blob_failures: u32,
    /// Optional upload rate limit, shared by the copies that share these options.
    pub bandwidth: Option<std::sync::Arc<RateLimiter>>,
    /// Optional bound on the blobs whose bytes move at once, shared by the copies that share
    /// these options. A slot is held while a blob streams and let go while its transfer waits
    /// out a backoff, so copies waiting on a registry do not keep others from moving bytes.
    pub transfer_slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            chunk_size: usize::MAX,
            blob_concurrency: 4,
            referrers: true,
            max_blob_failures: 6,
            bandwidth: None,
            transfer_slots: None,
        }
    }
}

/// Live progress of a copy, readable while it runs.
#[derive(Default, Debug)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

impl Progress {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.bytes_done.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        )
    }
}

/// What a copy did.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Digest of the top manifest now at the destination.
    pub digest: String,
    pub bytes_total: u64,
    pub bytes_uploaded: u64,
    pub blobs_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub manifests_written: u64,
    /// True when the destination already held the same digest under the tag.
    pub up_to_date: bool,
    pub referrers_copied: u64,
}

#[derive(Default)]
struct Counters {
    bytes_uploaded: AtomicU64,
    blobs_uploaded: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_skipped: AtomicU64,
    manifests_written: AtomicU64,
    referrers: AtomicU64,
}

/// State shared by all copies: where blobs are known to exist (for cross-repository mounts),
/// and which blobs are being uploaded right now (so one blob crosses once per registry even when
/// many copies need it at the same moment).
#[derive(Default)]
pub struct Engine {
    known: Mutex<HashMap<(String, String), String>>, // (registry host, digest) -> repository
    /// Repositories per registry host that hold copies (most recent first): where a blob
    /// nobody has seen yet is looked for before it is uploaded (after a restart, the statuses
    /// of the objects say where their copies are).
    repositories: Mutex<HashMap<String, std::collections::VecDeque<String>>>,
    /// Blobs being uploaded to a registry host right now: (host, digest).
    uploading: Claims<(String, String)>,
    /// Blobs being put into one repository right now (by HEAD, mount or upload): (host,
    /// repository, digest). The other copies that need the same blob there wait and then find it
    /// with a HEAD: no second mount. (Two mounts of one blob into one repository rewrite its link
    /// file, in place on distribution 2.8's filesystem driver, and a mount *from* that
    /// repository meanwhile can read it empty, fail, and send the whole blob again.)
    landing: Claims<(String, String, String)>,
}

/// Repositories looked in (HEAD) per blob before it is uploaded.
pub const MOUNT_CANDIDATES: usize = 4;
/// Blobs smaller than this are uploaded without looking for them elsewhere first.
pub const MOUNT_PROBE_MIN_BYTES: u64 = 1 << 20;
/// Repositories remembered per registry host.
const REPOSITORIES_PER_HOST: usize = 256;

/// Where blobs were seen, as saved between runs (`replicate -f`): registry host, digest,
/// repository.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
pub struct Locations {
    pub blobs: Vec<(String, String, String)>,
    pub repositories: Vec<(String, String)>,
}

/// Keys of work one task at a time does: whoever claims a key holds it until its [`Claim`] is
/// dropped (however the work ends); the others wait for that and look again.
struct Claims<K>(Mutex<HashMap<K, tokio::sync::watch::Receiver<bool>>>);

impl<K> Default for Claims<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq + Clone> Claims<K> {
    /// Claim `key` unless it is held (`Err(Some(holder))`: wait on it with
    /// `wait_for(|done| *done)`) or `unless()`, asked under the lock, says not to (`Err(None)`).
    fn try_claim(
        &self,
        key: &K,
        unless: impl FnOnce() -> bool,
    ) -> Result<Claim<'_, K>, Option<tokio::sync::watch::Receiver<bool>>> {
        let mut held = self.0.lock().expect("claims lock");
        if let Some(holder) = held.get(key) {
            return Err(Some(holder.clone()));
        }
        if unless() {
            return Err(None);
        }
        let (done, rx) = tokio::sync::watch::channel(false);
        held.insert(key.clone(), rx);
        Ok(Claim {
            claims: self,
            key: key.clone(),
            done,
        })
    }

    /// Claim `key`, first waiting for whoever holds it.
    async fn claim(&self, key: &K) -> Claim<'_, K> {
        loop {
            match self.try_claim(key, || false) {
                Ok(c) => return c,
                Err(Some(mut holder)) => {
                    let _ = holder.wait_for(|done| *done).await;
                }
                Err(None) => {}
            }
        }
    }
}

/// A held key of [`Claims`]; dropping it lets the key go and wakes the waiters.
struct Claim<'a, K: std::hash::Hash + Eq> {
    claims: &'a Claims<K>,
    key: K,
    done: tokio::sync::watch::Sender<bool>,
}

impl<K: std::hash::Hash + Eq> Drop for Claim<'_, K> {
    fn drop(&mut self) {
        self.claims.0.lock().expect("claims lock").remove(&self.key);
        let _ = self.done.send(true);
    }
}

struct Job<'a> {
    src: &'a Registry,
    src_repo: &'a str,
    dst: &'a Registry,
    dst_repo: &'a str,
    opts: &'a CopyOptions,
    progress: &'a Progress,
    counters: Counters,
    done_manifests: Mutex<HashSet<String>>,
}

impl Engine {
    fn remember(&self, host: &str, digest: &str, repo: &str) {
        self.known
            .lock()
            .expect("known lock")
            .insert((host.to_string(), digest.to_string()), repo.to_string());
    }
    fn known_elsewhere(&self, host: &str, digest: &str, repo: &str) -> Option<String> {
        self.known
            .lock()
            .expect("known lock")
            .get(&(host.to_string(), digest.to_string()))
            .filter(|r| r.as_str() != repo)
            .cloned()
    }

    /// Remember that `repo` on `host` holds a copy: its blobs are mount candidates.
    pub fn note_repository(&self, host: &str, repo: &str) {
        let mut all = self.repositories.lock().expect("repositories lock");
        let list = all.entry(host.to_string()).or_default();
        if list.front().is_some_and(|r| r == repo) {
            return;
        }
        list.retain(|r| r != repo);
        list.push_front(repo.to_string());
        list.truncate(REPOSITORIES_PER_HOST);
    }

    /// Repositories of `host` that hold copies, worth a HEAD for a blob `dst_repo` needs.
    fn candidates(&self, host: &str, dst_repo: &str, src_repo: &str) -> Vec<String> {
        let all = self.repositories.lock().expect("repositories lock");
        all.get(host)
            .into_iter()
            .flatten()
            .filter(|r| r.as_str() != dst_repo && r.as_str() != src_repo)
            .take(MOUNT_CANDIDATES)
            .cloned()
            .collect()
    }

    /// What this engine knows of blob locations, to save between runs.
    pub fn locations(&self) -> Locations {
        let blobs = self
            .known
            .lock()
            .expect("known lock")
            .iter()
            .map(|((h, d), r)| (h.clone(), d.clone(), r.clone()))
            .collect();
        let repositories = self
            .repositories
            .lock()
            .expect("repositories lock")
            .iter()
            .flat_map(|(h, rs)| rs.iter().rev().map(move |r| (h.clone(), r.clone())))
            .collect();
        Locations { blobs, repositories }
    }

    /// Learn saved locations (a saved location may be stale: a mount from it that fails is an
    /// upload like any other).
    pub fn learn(&self, l: Locations) {
        for (h, d, r) in l.blobs {
            self.remember(&h, &d, &r);
        }
        for (h, r) in l.repositories {
            self.note_repository(&h, &r);
        }
    }

    /// The repository to mount a blob from: the source repository on the same registry; else
    /// where the blob is known to be; else, for a blob worth a round trip, a repository that
    /// holds copies and answers a HEAD for it; else the source repository's name (mirrors keep
    /// names), tried as the mount itself — a refused mount opens the upload session the blob
    /// needed anyway, so that try costs nothing.
    async fn mount_source(&self, job: &Job<'_>, digest: &str, size: u64) -> Option<String> {
        let (dst, host) = (job.dst, job.dst.addr.host.as_str());
        if job.src.addr == dst.addr {
            return Some(job.src_repo.to_string());
        }
        if let Some(r) = self.known_elsewhere(host, digest, job.dst_repo) {
            return Some(r);
        }
        if size >= MOUNT_PROBE_MIN_BYTES {
            for cand in self.candidates(host, job.dst_repo, job.src_repo) {
                // A repository we may not read, or that is gone, is simply not a holder.
                if dst.head_blob(&cand, digest).await.unwrap_or(false) {
                    return Some(cand);
                }
            }
        }
        (job.src_repo != job.dst_repo).then(|| job.src_repo.to_string())
    }

    /// Copy `src_repo:reference` to `dst_repo` (under `dst_tag` when given, else by digest).
    #[allow(clippy::too_many_arguments)]
    pub async fn copy(
        &self,
        src: &Registry,
        src_repo: &str,
        reference: &str,
        dst: &Registry,
        dst_repo: &str,
        dst_tag: Option<&str>,
        opts: &CopyOptions,
        progress: &Progress,
    ) -> Result<CopyReport, OciError> {
        let job = Job {
            src,
            src_repo,
            dst,
            dst_repo,
            opts,
            progress,
            counters: Counters::default(),
            done_manifests: Mutex::new(HashSet::new()),
        };
        let top = src
            .get_manifest(src_repo, reference)
            .await?
            .ok_or_else(|| OciError::Http {
                op: "get manifest",
                status: 404,
                code: None,
                message: format!("{}/{src_repo}:{reference} not found", src.addr.host),
            })?;
        let target = dst_tag.unwrap_or(&top.digest).to_string();
        self.note_repository(&src.addr.host, src_repo);
        let current = dst.head_manifest(dst_repo, &target).await?;
        let up_to_date = current.as_deref() == Some(top.digest.as_str());
        if !up_to_date {
            self.copy_tree(&job, &top).await?;
            dst.put_manifest(dst_repo, &target, &top).await?;
            job.counters.manifests_written.fetch_add(1, Ordering::Relaxed);
        }
        self.note_repository(&dst.addr.host, dst_repo);
        if opts.referrers {
            self.copy_referrers(&job, &top.digest).await?;
        }
        let c = &job.counters;
        Ok(CopyReport {
            digest: top.digest.clone(),
            bytes_total: progress.bytes_total.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            blobs_uploaded: c.blobs_uploaded.load(Ordering::Relaxed),
            blobs_mounted: c.blobs_mounted.load(Ordering::Relaxed),
            blobs_skipped: c.blobs_skipped.load(Ordering::Relaxed),
            manifests_written: c.manifests_written.load(Ordering::Relaxed),
            up_to_date,
            referrers_copied: c.referrers.load(Ordering::Relaxed),
        })
    }

    /// Copy everything a manifest refers to (not the manifest itself).
    async fn copy_tree(&self, job: &Job<'_>, m: &Manifest) -> Result<(), OciError> {
        let body = m.parse()?;
        if m.is_index() {
            for child in &body.manifests {
                self.copy_manifest_by_digest(job, &child.digest).await?;
            }
            return Ok(());
        }
        let blobs: Vec<_> = body
            .config
            .iter()
            .chain(body.layers.iter())
            .chain(body.blobs.iter())
            .filter(|d| d.urls.is_empty()) // foreign layers are not distributable
            .cloned()
            .collect();
        let total: u64 = blobs.iter().map(|b| b.size.max(0) as u64).sum();
        job.progress.bytes_total.fetch_add(total, Ordering::Relaxed);
        futures::stream::iter(
            blobs
                .into_iter()
                .map(|b| async move { self.copy_blob(job, &b.digest, b.size.max(0) as u64).await }),
        )
        .buffer_unordered(job.opts.blob_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// Copy a child manifest (and what it refers to) by digest, once per job.
    fn copy_manifest_by_digest<'a>(
        &'a self,
        job: &'a Job<'a>,
        digest: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), OciError>> {
        Box::pin(async move {
            if !job.done_manifests.lock().expect("done lock").insert(digest.to_string()) {
                return Ok(());
            }
            if job.dst.head_manifest(job.dst_repo, digest).await?.is_some() {
                return Ok(());
            }
            let child = job
                .src
                .get_manifest(job.src_repo, digest)
                .await?
                .ok_or_else(|| OciError::Http {
                    op: "get manifest",
                    status: 404,
                    code: None,
                    message: format!("{}@{digest} referenced but not found", job.src_repo),
                })?;
            self.copy_tree(job, &child).await?;
            job.dst.put_manifest(job.dst_repo, digest, &child).await?;
            job.counters.manifests_written.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    async fn copy_referrers(&self, job: &Job<'_>, digest: &str) -> Result<(), OciError> {
        match job.src.referrers(job.src_repo, digest).await? {
            Some(list) => {
                for r in list {
                    self.copy_manifest_by_digest(job, &r.digest).await?;
                    job.counters.referrers.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                // Tag schema fallback: sha256-<hex> (referrers index) and cosign sha256-<hex>.sig/.att/.sbom.
                let prefix = digest.replacen(':', "-", 1);
                let tags = job.src.tags(job.src_repo).await?;
                for t in tags
                    .iter()
                    .filter(|t| *t == &prefix || t.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with('.')))
                {
                    let Some(m) = job.src.get_manifest(job.src_repo, t).await? else {
                        continue;
                    };
                    if job.dst.head_manifest(job.dst_repo, t).await?.as_deref() == Some(m.digest.as_str()) {
                        continue;
                    }
                    self.copy_tree(job, &m).await?;
                    job.dst.put_manifest(job.dst_repo, t, &m).await?;
                    job.counters.manifests_written.fetch_add(1, Ordering::Relaxed);
                    job.counters.referrers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    async fn copy_blob(&self, job: &Job<'_>, digest: &str, size: u64) -> Result<(), OciError> {
        let (dst, dst_host) = (job.dst, job.dst.addr.host.as_str());
        let key = (dst_host.to_string(), digest.to_string());
        let _landing = self
            .landing
            .claim(&(dst_host.to_string(), job.dst_repo.to_string(), digest.to_string()))
            .await;
        loop {
            if dst.head_blob(job.dst_repo, digest).await? {
                self.remember(dst_host, digest, job.dst_repo);
                job.counters.blobs_skipped.fetch_add(1, Ordering::Relaxed);
                job.progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                return Ok(());
            }
            // Same registry: mount from the source repository. Otherwise from where it is known
            // or found to be.
            let tried = self.mount_source(job, digest, size).await;
            let location = match tried.clone() {
                Some(from) => match dst.mount_blob(job.dst_repo, digest, &from).await {
                    Ok(Mount::Mounted) => {
                        self.remember(dst_host, digest, job.dst_repo);
                        job.counters.blobs_mounted.fetch_add(1, Ordering::Relaxed);
                        job.progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                        return Ok(());
                    }
                    Ok(Mount::Upload(loc)) => Some(loc),
                    // A mount the registry refuses outright (no rights on `from`): upload.
                    Err(e) if !e.is_retryable() && !matches!(e, OciError::Refused(_)) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            // Someone else uploading it to this registry (wait, then look again), or another
            // copy finished it while we looked (an uploader remembers the blob before its claim
            // goes): look again rather than upload it a second time.
            let claimed = self.uploading.try_claim(&key, || {
                let known_now = self.known_elsewhere(dst_host, digest, job.dst_repo);
                known_now.is_some() && known_now != tried
            });
            let _uploading = match claimed {
                Ok(claim) => claim,
                Err(holder) => {
                    if let Some(loc) = &location {
                        self.abandon(job, loc).await;
                    }
                    if let Some(mut holder) = holder {
                        let _ = holder.wait_for(|done| *done).await;
                    }
                    continue;
                }
            };
            let location = match location {
                Some(l) => l,
                None => dst.start_upload(job.dst_repo).await?,
            };
            let mut location = location;
            let streamed = self.stream_blob(job, digest, size, &mut location).await;
            if streamed.is_err() {
                // Whatever went wrong, the session it leaves is cancelled (or reported).
                self.abandon(job, &location).await;
            }
            streamed?;
            self.remember(dst_host, digest, job.dst_repo);
            job.counters.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }

    /// Stream a blob to the destination in chunks of `chunk_size`: each chunk's bytes flow from
    /// the source response straight into the PATCH body (never buffered whole), hashed on the
    /// way. After a broken connection the registry says how much it holds; those bytes are read
    /// again from the source only to bring the hash up to that offset, and the upload resumes
    /// there ([`Upload::recovery`] decides, a pure function).
    ///
    /// `location` is the session in use; on an error the caller cancels whatever it is then.
    async fn stream_blob(&self, job: &Job<'_>, digest: &str, size: u64, location: &mut String) -> Result<(), OciError> {
        let src = job.src;
        let mut up = Upload::new();
        loop {
            if up.failures > 0 {
                tokio::time::sleep(src.retry.delay(up.failures)).await;
            }
            // Held for this try; the next one takes it again after the backoff above.
            let _slot = match &job.opts.transfer_slots {
                Some(slots) => Some(slots.acquire().await.expect("transfer slots never closed")),
                None => None,
            };
            if self.try_upload(job, digest, size, location, &mut up).await? {
                break;
            }
        }
        let got = format!("sha256:{}", hex(&up.snapshot.finalize()));
        if got != digest {
            return Err(OciError::DigestMismatch {
                what: format!("blob read from {}/{}", src.addr.host, job.src_repo),
                expected: digest.to_string(),
                got,
            });
        }
        job.dst.finish_upload(job.dst_repo, location, digest).await
    }

    /// One try: open the source where the upload stands, catch the hash up with what the
    /// registry holds ahead, send the rest chunk by chunk. `Ok(true)`: every byte is confirmed;
    /// `Ok(false)`: try again (the failure is counted in `up`); `Err`: give up.
    async fn try_upload(
        &self,
        job: &Job<'_>,
        digest: &str,
        size: u64,
        location: &mut String,
        up: &mut Upload,
    ) -> Result<bool, OciError> {
        let max = job.opts.max_blob_failures;
        let mut source: Source = match job.src.get_blob(job.src_repo, digest, up.confirmed).await {
            Ok(r) => r.bytes_stream().boxed(),
            Err(e) => return up.retry(e, max).map(|_| false),
        };
        let mut carry = match catch_up(job, &mut source, up).await {
            Ok(carry) => carry,
            Err(e) => return up.retry(e, max).map(|_| false),
        };
        while up.confirmed < size {
            let len = (job.opts.chunk_size as u64).min(size - up.confirmed);
            match self
                .send_chunk(job, digest, &mut source, carry.take(), location, up, len)
                .await
            {
                Ok(rest) => carry = rest,
                Err(err) => {
                    self.recover(job, digest, size, location, up, len, err).await?;
                    return Ok(false);
                }
            }
        }
        // Nothing may follow the declared size.
        let extra = carry.is_some_and(|c| !c.is_empty()) || matches!(source.next().await, Some(Ok(b)) if !b.is_empty());
        if extra {
            return Err(OciError::DigestMismatch {
                what: format!("blob {digest} from {}", job.src.addr.host),
                expected: format!("{size} bytes"),
                got: format!("more than {size} bytes"),
            });
        }
        Ok(true)
    }

    /// One PATCH of `len` bytes at `up.confirmed`, fed from the source as it reads (a broken
    /// source is reopened where it stands; the destination never notices). Accepted: the
    /// upload moves on and the bytes read past the chunk come back. Not: its bytes leave the
    /// progress again and the error comes back.
    #[allow(clippy::too_many_arguments)]
    async fn send_chunk(
        &self,
        job: &Job<'_>,
        digest: &str,
        source: &mut Source,
        carry: Option<Bytes>,
        location: &mut String,
        up: &mut Upload,
        len: u64,
    ) -> Result<Option<Bytes>, OciError> {
        let dst = job.dst;
        // Bytes of this PATCH sent so far: progress while it streams.
        let chunk_sent = AtomicU64::new(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (x, rx))
        }));
        let upload = dst.patch_stream(job.dst_repo, location, up.confirmed, len, body);
        let feed = Feed {
            job,
            digest,
            start: up.confirmed,
            len,
            sent: &chunk_sent,
        };
        let pump = feed.pump(source, carry, up.snapshot.clone(), tx);
        match tokio::join!(upload, pump) {
            (Ok(next), Ok((hash, rest))) => {
                *location = next;
                up.accepted(len, hash);
                job.counters.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
                dst.stats.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
                Ok(rest)
            }
            (uploaded, pumped) => {
                // Not confirmed: out of the progress until the registry says it holds it.
                job.progress
                    .bytes_done
                    .fetch_sub(chunk_sent.load(Ordering::Relaxed), Ordering::Relaxed);
                Err(match (uploaded, pumped) {
                    (_, Err(message)) => OciError::Transport {
                        op: "read blob",
                        message,
                    },
                    (Err(e), _) => e,
                    (Ok(_), Ok(_)) => unreachable!("both succeeded above"),
                })
            }
        }
    }

    /// After a chunk failed: counted (`Err` when the failures are used up), then resumed where
    /// the registry says it stands, or started again from byte 0 on a new session (bounded).
    #[allow(clippy::too_many_arguments)]
    async fn recover(
        &self,
        job: &Job<'_>,
        digest: &str,
        size: u64,
        location: &mut String,
        up: &mut Upload,
        len: u64,
        err: OciError,
    ) -> Result<(), OciError> {
        let dst = job.dst;
        let refused = matches!(err, OciError::Http { status: 404 | 416, .. });
        let why = err.to_string();
        up.retry(err, job.opts.max_blob_failures)?;
        // How much did the registry keep?
        let status = if refused {
            None
        } else {
            dst.upload_status(job.dst_repo, location).await.ok()
        };
        let held = status.as_ref().map(|(held, _)| *held);
        match up.recovery(len, held, job.opts.max_blob_failures) {
            Recovery::Resume { held } => {
                *location = status.expect("a held count comes with its location").1;
                up.held_ahead = held - up.confirmed;
            }
            Recovery::GiveUp => {
                return Err(OciError::Transport {
                    op: "upload blob",
                    message: format!(
                        "{digest}: gave up after {} upload restarts ({} of {size} bytes held at the last one): {why}",
                        up.restarts, up.confirmed
                    ),
                });
            }
            Recovery::Restart => {
                self.abandon(job, location).await;
                *location = dst.start_upload(job.dst_repo).await?;
                dst.stats.upload_restarts.fetch_add(1, Ordering::Relaxed);
                job.progress.bytes_done.fetch_sub(up.confirmed, Ordering::Relaxed);
                up.restart();
            }
        }
        Ok(())
    }

    /// Cancel an upload session this copy gives up. One the registry no longer has is fine;
    /// one it will not cancel is counted and logged (the registry purges it on its own
    /// schedule — distribution's `storage.maintenance.uploadpurging`, a week by default).
    async fn abandon(&self, job: &Job<'_>, location: &str) {
        if let Err(e) = job.dst.cancel_upload(job.dst_repo, location).await {
            job.dst.stats.sessions_left.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                registry = %job.dst.addr.host,
                repository = job.dst_repo,
                error = %e,
                "an upload session given up could not be cancelled; the registry keeps its bytes until it purges it"
            );
        }
    }
}

/// A blob's bytes as the source sends them.
type Source = futures::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// Where one blob's upload stands between tries.
struct Upload {
    /// Bytes the destination holds.
    confirmed: u64,
    /// The hash of those bytes.
    snapshot: Sha256,
    /// Bytes past `confirmed` the registry already holds: read from the source again only to
    /// bring the hash up to them, not sent.
    held_ahead: u64,
    /// Failed tries since the last accepted chunk.
    failures: u32,
    /// Restarts from byte 0, never reset by accepted chunks: bounded per blob, so a registry
    /// that keeps cutting uploads cannot make us resend the blob without end.
    restarts: u32,
}

/// What a failed chunk leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// The registry holds `held` bytes of the blob (within the failed chunk): resume there.
    Resume { held: u64 },
    /// Unknown or refused state: the blob starts again from byte 0 on a new session.
    Restart,
    /// Restarted as often as allowed: the blob fails.
    GiveUp,
}

impl Upload {
    fn new() -> Self {
        Self {
            confirmed: 0,
            snapshot: Sha256::new(),
            held_ahead: 0,
            failures: 0,
            restarts: 0,
        }
    }

    /// A failure, counted: `Err(e)` when no try is left for it — `max_failures` reached, or an
    /// error a retry cannot mend (a resumed PATCH the registry refuses, 404
    /// BLOB_UPLOAD_INVALID/UNKNOWN or 416, is mended by a restart).
    fn retry(&mut self, e: OciError, max_failures: u32) -> Result<(), OciError> {
        self.failures += 1;
        let refused_resume = matches!(
            e,
            OciError::Http {
                op: "upload chunk",
                status: 404 | 416,
                ..
            }
        );
        if self.failures >= max_failures || !(e.is_retryable() || refused_resume) {
            Err(e)
        } else {
            Ok(())
        }
    }

    /// After a chunk of `len` bytes failed and the registry said it holds `held` bytes in all
    /// (`None`: it would not say, or refused the session).
    fn recovery(&self, len: u64, held: Option<u64>, max_failures: u32) -> Recovery {
        match held {
            Some(h) if h >= self.confirmed && h <= self.confirmed + len => Recovery::Resume { held: h },
            _ if self.restarts >= max_failures => Recovery::GiveUp,
            _ => Recovery::Restart,
        }
    }

    fn accepted(&mut self, len: u64, hash: Sha256) {
        self.confirmed += len;
        self.snapshot = hash;
        self.failures = 0;
    }

    fn restart(&mut self) {
        self.restarts += 1;
        self.confirmed = 0;
        self.held_ahead = 0;
        self.snapshot = Sha256::new();
    }
}

/// Bring the hash up to what the registry holds past `up.confirmed` (`up.held_ahead`), from
/// the source; returns the bytes read past that.
async fn catch_up(job: &Job<'_>, source: &mut Source, up: &mut Upload) -> Result<Option<Bytes>, OciError> {
    let mut carry = None;
    while up.held_ahead > 0 {
        let piece = match source.next().await {
            Some(Ok(b)) => b,
            other => {
                return Err(OciError::Transport {
                    op: "read blob",
                    message: source_broke(other),
                });
            }
        };
        let take = (piece.len() as u64).min(up.held_ahead) as usize;
        up.snapshot.update(&piece[..take]);
        up.confirmed += take as u64;
        up.held_ahead -= take as u64;
        job.progress.bytes_done.fetch_add(take as u64, Ordering::Relaxed);
        if take < piece.len() {
            carry = Some(piece.slice(take..));
        }
    }
    Ok(carry)
}

/// Why a source stream gave no more bytes.
fn source_broke(next: Option<reqwest::Result<Bytes>>) -> String {
    match next {
        Some(Err(e)) => e.without_url().to_string(),
        _ => "the source ended early".into(),
    }
}

/// The source half of one PATCH.
struct Feed<'a, 'j> {
    job: &'a Job<'j>,
    digest: &'a str,
    /// Where the chunk starts in the blob, and its length.
    start: u64,
    len: u64,
    /// Bytes of the chunk sent so far (progress while it streams).
    sent: &'a AtomicU64,
}

impl Feed<'_, '_> {
    /// Feed the chunk's bytes into the PATCH body, hashing them: from `carry` first, then the
    /// source, reopened where it stands when it breaks (bounded). Returns the hash and the
    /// bytes read past the chunk.
    async fn pump(
        &self,
        source: &mut Source,
        mut carry: Option<Bytes>,
        mut hasher: Sha256,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(Sha256, Option<Bytes>), String> {
        let (job, src) = (self.job, self.job.src);
        let mut sent = 0u64;
        let mut source_failures = 0u32;
        while sent < self.len {
            let piece = match carry.take() {
                Some(p) => p,
                None => match source.next().await {
                    Some(Ok(b)) => b,
                    other => {
                        source_failures += 1;
                        let why = source_broke(other);
                        if source_failures >= job.opts.max_blob_failures {
                            return Err(why);
                        }
                        tokio::time::sleep(src.retry.delay(source_failures)).await;
                        match src.get_blob(job.src_repo, self.digest, self.start + sent).await {
                            Ok(r) => *source = r.bytes_stream().boxed(),
                            Err(e) => return Err(format!("{why}; reopening: {e}")),
                        }
                        continue;
                    }
                },
            };
            let want = (self.len - sent) as usize;
            let now = if piece.len() > want {
                carry = Some(piece.slice(want..));
                piece.slice(..want)
            } else {
                piece
            };
            // The rate limit, piece by piece: smooth whatever the PATCH size.
            if let Some(limit) = &job.opts.bandwidth {
                limit.take(now.len() as u64).await;
            }
            hasher.update(&now);
            sent += now.len() as u64;
            self.sent.fetch_add(now.len() as u64, Ordering::Relaxed);
            job.progress.bytes_done.fetch_add(now.len() as u64, Ordering::Relaxed);
            if tx.send(Ok(now)).await.is_err() {
                return Err("the upload stopped taking data".to_string());
            }
        }
        Ok((hasher, carry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The recovery decision of a failed chunk, as a table: resume where the registry says it
    /// stands when that lies within the chunk; otherwise restart from byte 0, at most
    /// `max_blob_failures` times per blob (restarts are never reset by accepted chunks).
    #[test]
    fn a_failed_chunk_resumes_restarts_or_gives_up() {
        let at = |confirmed: u64, restarts: u32| Upload {
            confirmed,
            restarts,
            ..Upload::new()
        };
        let max = 3;
        for (case, up, held, want) in [
            (
                "held within the chunk",
                at(100, 0),
                Some(150),
                Recovery::Resume { held: 150 },
            ),
            (
                "held nothing new",
                at(100, 0),
                Some(100),
                Recovery::Resume { held: 100 },
            ),
            (
                "held the whole chunk",
                at(100, 0),
                Some(164),
                Recovery::Resume { held: 164 },
            ),
            ("held more than was sent", at(100, 0), Some(165), Recovery::Restart),
            ("held less than confirmed", at(100, 0), Some(50), Recovery::Restart),
            ("would not say", at(100, 2), None, Recovery::Restart),
            ("restarted as often as allowed", at(100, 3), None, Recovery::GiveUp),
            (
                "resumes even then",
                at(100, 3),
                Some(120),
                Recovery::Resume { held: 120 },
            ),
        ] {
            assert_eq!(up.recovery(64, held, max), want, "{case}");
        }
        // Failures: retryable ones and refused resumes are tried again, until the bound.
        let http = |op, status| OciError::Http {
            op,
            status,
            code: None,
            message: String::new(),
        };
        let mut up = Upload::new();
        assert!(
            up.retry(http("upload chunk", 416), max).is_ok(),
            "a refused resume restarts"
        );
        assert!(up.retry(http("upload chunk", 503), max).is_ok());
        assert!(
            up.retry(http("upload chunk", 503), max).is_err(),
            "the third failure in a row"
        );
        let mut up = Upload::new();
        assert!(up.retry(http("read blob", 403), max).is_err(), "not retryable");
        let mut up = Upload::new();
        up.retry(http("upload chunk", 503), max).unwrap();
        up.accepted(64, Sha256::new());
        up.restart();
        assert_eq!(
            (up.failures, up.restarts, up.confirmed),
            (0, 1, 0),
            "accepted resets failures, not restarts"
        );
    }

    #[tokio::test]
    async fn a_claimed_key_waits_its_second_claimant_until_the_first_lets_go() {
        let claims: Arc<Claims<&str>> = Arc::default();
        let first = claims.claim(&"blob").await;
        assert!(matches!(claims.try_claim(&"blob", || false), Err(Some(_))), "held");
        assert!(
            matches!(claims.try_claim(&"other", || true), Err(None)),
            "`unless` says no"
        );
        let c = claims.clone();
        let second = tokio::spawn(async move {
            let _held = c.claim(&"blob").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second claimant waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("woken when the first claim goes")
            .unwrap();
        assert!(claims.try_claim(&"blob", || false).is_ok(), "free again");
    }

    #[test]
    fn rate_limiter_spaces_reservations_at_the_rate() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        assert_eq!(l.reserve(t0, 500), t0);
        assert_eq!(l.reserve(t0, 500), t0 + Duration::from_millis(500));
        assert_eq!(l.reserve(t0, 1000), t0 + Duration::from_millis(1000));
        // After an idle period the budget does not accumulate beyond "now".
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.reserve(later, 1), later);
    }
}
