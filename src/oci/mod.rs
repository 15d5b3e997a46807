//! OCI Distribution: references, a registry client, and the copy engine.
//!
//! Written by hand on reqwest rather than with `oci-client`: the copy needs registry-to-registry
//! streaming with chunked, resumable uploads, cross-repository mounts, HEAD checks, referrers
//! with the tag-schema fallback, and one request budget per host shared across all objects;
//! `oci-client` buffers pushed blobs in memory and has no shared budget.

pub mod api;
pub mod client;
pub mod copy;
pub mod credentials;
pub mod digest;
pub mod reference;

pub use client::{Budgets, Credentials, OciError, Registry};
pub use copy::{CopyOptions, CopyReport, Engine, Progress};
pub use credentials::SecretCredentials;
pub use reference::{ImageRef, RegistryAddr};
