//! The provider registry: which image services and registries this build can drive, each
//! behind the trait that does its work.
//!
//! ImageReplication looks its provider up by `spec.provider.kind`
//! ([`ImageProvider`]: the oci copy engine, and one [`Vm`] per cloud on the shared VM engine);
//! ReplicaInstance by `spec.primary.provider` ([`ReplicaBackend`]: the oci syncer, TCR). A kind
//! absent here is reported `Stalled=True, reason ProviderNotImplemented`. The controllers and
//! `replicate -f` build the same registry from a [`Wiring`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::api::v1alpha1::{ProviderKind, ReplicaProvider};
use crate::image_replication::oci::Oci as OciImages;
use crate::image_replication::oci::replicator::OciReplicator;
pub use crate::image_replication::provider::ImageProvider;
use crate::image_replication::vm::ImageService;
use crate::image_replication::vm::engine::{Settings, VmEngine};
use crate::image_replication::vm::provider::Vm;
use crate::image_replication::vm::providers::CLOUDS;
use crate::replica_instance::oci::Oci as OciReplica;
use crate::replica_instance::oci::notify::Notifications;
use crate::replica_instance::oci::sync::ReplicaSyncer;
pub use crate::replica_instance::provider::ReplicaBackend;
use crate::replica_instance::tcr::client::Tcr;
use crate::server::metrics::Metrics;
use crate::tasks::OnDone;

/// What the built-in providers are made with.
pub struct Wiring {
    pub metrics: Metrics,
    /// Called with an ImageReplication's key when its background work ends (a copy, a poll due,
    /// a quota slot freed).
    pub image_wake: OnDone,
    /// Called with a ReplicaInstance's key when its sync ends.
    pub replica_wake: OnDone,
    /// How often an Available oci copy is checked for drift.
    pub resync: Duration,
    /// The VM engine's limits, polling and drift checks; its `max_attempts` holds for oci too.
    pub vm: Settings,
    pub notifications: Arc<Notifications>,
    /// The oci copy engine and the replica syncer (one request budget per registry host each).
    pub oci: Arc<OciReplicator>,
    pub syncer: Arc<ReplicaSyncer>,
    /// Full syncs of oci ReplicaInstances this often instead of each spec's interval.
    pub sync_interval: Option<Duration>,
    /// Copy slots shared across the installation's processes (see the VM engine).
    pub slots: Option<Arc<dyn crate::image_replication::vm::slots::Slots>>,
}

impl Wiring {
    /// The defaults, with registry requests observed by `metrics`.
    pub fn new(metrics: Metrics, image_wake: OnDone, replica_wake: OnDone) -> Self {
        let budgets = || crate::oci::Budgets::default().with_observer(metrics.registry_observer());
        Self {
            oci: Arc::new(OciReplicator::with_budgets(budgets())),
            syncer: Arc::new(ReplicaSyncer::with_budgets(budgets())),
            metrics,
            image_wake,
            replica_wake,
            resync: Duration::from_secs(300),
            vm: Settings::default(),
            notifications: Arc::new(Notifications::new(None)),
            sync_interval: None,
            slots: None,
        }
    }
}

/// The cloud image services of this build, one per cloud of the registry
/// ([`crate::image_replication::vm::providers::CLOUDS`]).
pub fn clouds() -> Vec<Arc<dyn ImageService>> {
    CLOUDS.iter().map(|c| (c.service)()).collect()
}

/// Providers available to the controllers.
#[derive(Clone, Default)]
pub struct Registry {
    image: HashMap<ProviderKind, Arc<dyn ImageProvider>>,
    replica: HashMap<ReplicaProvider, Arc<dyn ReplicaBackend>>,
}

impl Registry {
    /// Every provider this build has: oci and the clouds for ImageReplication (the clouds on one
    /// VM engine: one quota ledger per account across them), oci and TCR for ReplicaInstance.
    pub fn builtin(w: &Wiring) -> Self {
        let mut engine = VmEngine::new(w.vm.clone(), w.image_wake.clone(), Some(w.metrics.clone()));
        engine.slots = w.slots.clone();
        let engine = Arc::new(engine);
        let mut replica = OciReplica::new(
            w.syncer.clone(),
            w.replica_wake.clone(),
            w.notifications.clone(),
            w.metrics.clone(),
        );
        if let Some(i) = w.sync_interval {
            replica = replica.with_interval(i);
        }
        let images = OciImages::new(
            w.oci.clone(),
            w.image_wake.clone(),
            w.resync,
            w.vm.max_attempts,
            w.metrics.clone(),
        );
        clouds()
            .into_iter()
            .fold(Self::default(), |r, c| {
                r.with_image(Arc::new(Vm::new(engine.clone(), c)))
            })
            .with_image(Arc::new(images))
            .with_replica(Arc::new(replica))
            .with_replica(Arc::new(Tcr::default()))
    }

    /// Add (or replace) an image provider.
    pub fn with_image(mut self, p: Arc<dyn ImageProvider>) -> Self {
        self.image.insert(p.kind(), p);
        self
    }

    /// Add (or replace) a replica backend.
    pub fn with_replica(mut self, p: Arc<dyn ReplicaBackend>) -> Self {
        self.replica.insert(p.kind(), p);
        self
    }

    /// The image provider for a kind, if built.
    pub fn image(&self, kind: ProviderKind) -> Option<Arc<dyn ImageProvider>> {
        self.image.get(&kind).cloned()
    }

    /// The replica backend for a kind, if built.
    pub fn replica(&self, kind: ReplicaProvider) -> Option<Arc<dyn ReplicaBackend>> {
        self.replica.get(&kind).cloned()
    }
}
