//! API types of the `replication.imageops.io` group and the names shared by the controllers.

pub mod conditions;
pub mod v1alpha1;
pub mod violation;

/// API group of both custom resources.
pub const GROUP: &str = "replication.imageops.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// Finalizer that keeps an object until its cleanup has run.
pub const FINALIZER: &str = "replication.imageops.io/cleanup";
/// Field manager of every status write, so that server-side apply sees one owner.
pub const FIELD_MANAGER: &str = "image-replication-operator";

pub use v1alpha1::{ImageReplication, ReplicaInstance};

/// An object's key, `namespace/name`: what background work, memory and wake-ups are kept by.
pub fn key_of<K: kube::Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}
