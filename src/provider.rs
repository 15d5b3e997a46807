//! The provider registry: which image services and registries this build can drive.
//!
//! Providers plug in here behind traits; the controllers look a provider up by the kind named in
//! the spec and report `Stalled=True, reason ProviderNotImplemented` when it is absent. VM image
//! services implement [`crate::image_replication::vm::ImageService`] (describe, start copy, find by token, poll,
//! cancel, delete); the oci path registers its replicator and syncer here too.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::v1alpha1::{ProviderKind, ReplicaProvider};
use crate::image_replication::vm::ImageService;

/// An image service that ImageReplication can copy between regions.
pub trait ImageProvider: Send + Sync {
    /// The provider kind this implementation serves.
    fn kind(&self) -> ProviderKind;
}

/// A registry service that ReplicaInstance can keep in sync.
pub trait ReplicaBackend: Send + Sync {
    /// The primary provider this implementation serves.
    fn kind(&self) -> ReplicaProvider;
}

/// Providers available to the controllers.
#[derive(Clone, Default)]
pub struct Registry {
    image: HashMap<ProviderKind, Arc<dyn ImageProvider>>,
    replica: HashMap<ReplicaProvider, Arc<dyn ReplicaBackend>>,
    vm: HashMap<ProviderKind, Arc<dyn ImageService>>,
}

impl Registry {
    /// The providers registered by default; the controllers and `replicate` add the built-in
    /// oci provider and replica backend (the ones whose budgets they own).
    pub fn builtin() -> Self {
        Self::default()
            .with_vm(Arc::new(
                crate::image_replication::vm::providers::openstack::OpenStack::default(),
            ))
            .with_vm(Arc::new(
                crate::image_replication::vm::providers::huawei::Huawei::default(),
            ))
            .with_vm(Arc::new(
                crate::image_replication::vm::providers::alibaba::Alibaba::default(),
            ))
            .with_vm(Arc::new(crate::image_replication::vm::providers::aws::Aws::default()))
            .with_vm(Arc::new(
                crate::image_replication::vm::providers::tencent::Tencent::default(),
            ))
    }

    /// Add a VM image service.
    pub fn with_vm(mut self, p: Arc<dyn ImageService>) -> Self {
        self.vm.insert(p.kind(), p);
        self
    }

    /// The VM image service for a kind, if built.
    pub fn vm(&self, kind: ProviderKind) -> Option<Arc<dyn ImageService>> {
        self.vm.get(&kind).cloned()
    }

    /// Whether ImageReplication can use this provider kind.
    pub fn has_image(&self, kind: ProviderKind) -> bool {
        self.image.contains_key(&kind) || self.vm.contains_key(&kind)
    }

    /// Add an image provider.
    pub fn with_image(mut self, p: Arc<dyn ImageProvider>) -> Self {
        self.image.insert(p.kind(), p);
        self
    }

    /// Add a replica backend.
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
