//! Version `v1alpha1` of the API.

mod common;
mod image_replication;
mod replica_instance;

pub use common::*;
pub use image_replication::*;
pub use replica_instance::*;
