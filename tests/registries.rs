//! Real registries and the fake API server: the copy engine, the oci controllers, replica syncs,
//! API-server faults.
//!
//! One test binary per harness (issue #32): each suite is a module of it, sharing one build of
//! `support`. Run one suite with `cargo test --test registries <suite>::`.

mod support;

#[path = "suites/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "suites/oci_controller.rs"]
mod oci_controller;
#[path = "suites/oci_copy.rs"]
mod oci_copy;
#[path = "suites/replica_controller.rs"]
mod replica_controller;
#[path = "suites/replica_sync.rs"]
mod replica_sync;
