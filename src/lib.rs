//! image-replication-operator: keeps VM images and container images present in every region
//! where they are needed, driven by the `ImageReplication` and `ReplicaInstance` custom resources.

pub mod api;
pub mod cloud;
pub mod controller;
pub mod crdgen;
pub mod egress;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod notify;
pub mod oci;
pub mod plan;
pub mod provider;
pub mod providers_oci;
pub mod redact;
pub mod regions;
pub mod replica_oci;
pub mod replicate;
pub mod server;
pub mod sync;
pub mod tasks;
pub mod tcr;
pub mod validation;

pub use error::{Error, Result};
pub mod vm;
