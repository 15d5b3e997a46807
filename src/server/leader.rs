//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Every write carries the resourceVersion that was read (PUT) or is a create, so two instances
//! can never both believe they hold the lease: the loser of a race gets 409 Conflict. Expiry is
//! judged on the local clock from the moment a lease version was first observed (as client-go
//! does), so clock skew between nodes does not matter.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_period: Duration,
    /// How often a candidate retries.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate may do with the lease it observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Held by us: renew.
    Renew,
    /// Free, released or expired: take it.
    Take,
    /// Held by someone else and still valid: wait.
    Wait,
}

/// Pure decision from the observed lease spec. `unchanged_for` is how long (on the local clock)
/// the lease's resourceVersion has been the same.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else { return Decision::Take };
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) => {
            let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
            if unchanged_for >= duration {
                Decision::Take
            } else {
                Decision::Wait
            }
        }
    }
}

/// Resolve once the flag is true (or its sender is gone).
pub async fn wait_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A lease held by this instance.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The resourceVersion we last wrote; the next write is fenced on it.
    held: Option<Lease>,
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            held: None,
            observed: None,
        }
    }

    fn spec_for(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. Returns whether we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = match self.api.get_opt(&self.cfg.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec_for(0, None)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => {
                        info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leader lease (created)");
                        self.held = Some(l);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let rv = current.metadata.resource_version.clone().unwrap_or_default();
        let unchanged_for = match &self.observed {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                self.observed = Some((rv, Instant::now()));
                Duration::ZERO
            }
        };
        let decision = decide(current.spec.as_ref(), &self.cfg.identity, unchanged_for);
        debug!(?decision, "lease observed");
        if decision == Decision::Wait {
            self.held = None;
            return Ok(false);
        }
        let old = current.spec.clone().unwrap_or_default();
        let spec = if decision == Decision::Renew {
            self.spec_for(old.lease_transitions.unwrap_or(0), old.acquire_time.clone())
        } else {
            self.spec_for(old.lease_transitions.unwrap_or(0) + 1, None)
        };
        let mut next = current;
        next.spec = Some(spec);
        // `next.metadata.resourceVersion` is the one we read: the PUT is fenced on it.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &next).await {
            Ok(l) => {
                if decision == Decision::Take {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leader lease");
                }
                self.held = Some(l);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.held = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Wait until the lease is ours (or `stop` resolves: then `false`).
    pub async fn acquire(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader lease request failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = wait_true(stop) => return false,
            }
        }
    }

    /// Renew until the lease is lost (returns) or `stop` resolves (releases, then returns).
    /// Returns true when the lease was lost, false on a clean stop.
    pub async fn hold(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.renew_period) => {}
                _ = wait_true(stop) => {
                    self.release().await;
                    return false;
                }
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.cfg.name, "leader lease taken by another instance");
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "leader lease renewal failed");
                    // Give up before the lease could expire for the others.
                    if last_ok.elapsed() + self.cfg.renew_period >= self.cfg.lease_duration {
                        return true;
                    }
                }
            }
        }
    }

    /// Give the lease up so a standby can take over at once. Fenced on our last write.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else { return };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.cfg.name, "released leader lease"),
            Err(e) => warn!(error = %e, "could not release leader lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let s = Duration::from_secs;
        assert_eq!(decide(None, "a", s(0)), Decision::Take);
        assert_eq!(decide(Some(&spec(Some("a"))), "a", s(0)), Decision::Renew);
        assert_eq!(decide(Some(&spec(None)), "a", s(0)), Decision::Take);
        assert_eq!(decide(Some(&spec(Some("b"))), "a", s(3)), Decision::Wait);
        assert_eq!(decide(Some(&spec(Some("b"))), "a", s(15)), Decision::Take);
    }
}
