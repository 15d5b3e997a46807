//! The real kube-apiserver and etcd (envtest): CEL, server-side apply, RBAC as the chart grants it,
//! Leases, request counts at rest.
//!
//! One test binary per harness (issue #32): each suite is a module of it, sharing one build of
//! `support`. Run one suite with `cargo test --test apiserver <suite>::`.

mod support;

#[path = "suites/envtest.rs"]
mod envtest;
#[path = "suites/envtest_at_rest.rs"]
mod envtest_at_rest;
#[path = "suites/identity.rs"]
mod identity;
