//! The signed-API clouds end to end: the stand-ins of Huawei, Alibaba, AWS (and moto) and
//! Tencent, in time (lag, paging, throttling, jobs), and TCR.
//!
//! One test binary per harness (issue #32): each suite is a module of it, sharing one build of
//! `support`. Run one suite with `cargo test --test clouds <suite>::`.

mod support;

#[path = "suites/replica_tencent.rs"]
mod replica_tencent;
#[path = "suites/vm_clouds.rs"]
mod vm_clouds;
