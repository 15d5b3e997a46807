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
pub mod image_replication;
pub mod oci;
pub mod plan;
pub mod provider;
pub mod redact;
pub mod regions;
pub mod replica_instance;
pub mod replicate;
pub mod schedule;
pub mod server;
pub mod tasks;
pub mod validation;

pub use error::{Error, Result};
