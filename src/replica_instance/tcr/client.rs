//! ReplicaInstance with `primary.provider: tencent`: Tencent Container Registry (TCR) Enterprise
//! instance replication, driven through the TCR API (`tcr.tencentcloudapi.com`, `2019-09-24`,
//! TC3-HMAC-SHA256). The cloud keeps the replica in real-time sync with its premium primary; the
//! operator creates the replica, reports its state and replication log, and deletes it under
//! `deletionPolicy: Delete`.
//!
//! - [`Tcr`]: the API client (describe, create, delete), with the documented per-action rate
//!   limits (CreateReplicationInstance 1/s, DescribeReplicationInstanceSyncStatus 5/s) kept per
//!   process on top of the throttling backoff.
//! - [`super::plan`]: pure, (object, what was observed, now) -> status, Events, whether to
//!   create.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::cloud::Backoff;
use crate::cloud::{Account, ProviderError};
use crate::image_replication::vm::providers::tencent::{Api3, api3_call};

const TCR_API: Api3 = Api3 {
    service: "tcr",
    version: "2019-09-24",
    endpoint: "https://tcr.tencentcloudapi.com",
};

/// Minimum spacing of calls per action (the documented limits; others 20/s).
fn min_interval(action: &str) -> Duration {
    match action {
        // TCR allows 1 a second, counted where the requests arrive: spaced with a margin, as
        // a request sent on a new connection arrives later than the next on a warm one (under
        // load a 1,000 ms spacing arrived 900 ms apart and was refused).
        "CreateReplicationInstance" => Duration::from_millis(1200),
        "DescribeReplicationInstanceSyncStatus" => Duration::from_millis(200),
        _ => Duration::from_millis(50),
    }
}

/// The primary instance as TCR describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub id: String,
    pub region: String,
    /// `premium`, `standard`, `basic`.
    pub kind: String,
    pub status: String,
}

/// A replica instance of the primary.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica {
    pub id: String,
    pub region_id: i64,
    pub region: String,
    pub status: String,
}

/// The replication log entry `DescribeReplicationInstanceSyncStatus` returns (the API gives
/// one `ReplicationLog` object, the latest, and no count).
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub resource_type: String,
    pub source: String,
    pub destination: String,
    pub status: String,
    pub end_time: Option<Time>,
}

/// What one reconcile saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// None: no such instance.
    pub instance: Option<Instance>,
    pub replica: Option<Replica>,
    pub sync_status: Option<String>,
    pub sync_time: Option<Time>,
    /// The latest replication log entry, if any.
    pub log: Option<LogEntry>,
}

/// The TCR API client.
pub struct Tcr {
    http: reqwest::Client,
    backoff: Backoff,
    last: Mutex<HashMap<String, Instant>>,
    /// The workload identity's keys (TKE OIDC, as CVM gets them), renewed before they expire.
    pub(super) sessions: crate::cloud::identity::Sessions,
    pub(super) sts: crate::image_replication::vm::providers::tencent::Tencent,
}

impl Default for Tcr {
    fn default() -> Self {
        Self {
            http: crate::cloud::client(),
            backoff: Backoff::default(),
            last: Mutex::new(HashMap::new()),
            sessions: Default::default(),
            sts: Default::default(),
        }
    }
}

fn time(v: &Value) -> Option<Time> {
    let s = v.as_str()?;
    s.parse::<Timestamp>()
        .ok()
        .or_else(|| format!("{}Z", s.replace(' ', "T")).parse::<Timestamp>().ok())
        .map(Time)
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()))
        .unwrap_or_default()
}

impl Tcr {
    async fn call(&self, acct: &Account, region: &str, action: &str, body: Value) -> Result<Value, ProviderError> {
        let wait = {
            let mut last = self.last.lock().expect("rate limits");
            let now = Instant::now();
            let next = last
                .get(action)
                .map(|t| *t + min_interval(action))
                .unwrap_or(now)
                .max(now);
            last.insert(action.to_string(), next);
            next - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        api3_call(&self.http, &self.backoff, acct, &TCR_API, region, action, body).await
    }

    /// Describe the primary, its replica in `replica_region` and that replica's sync status.
    pub async fn describe(
        &self,
        acct: &Account,
        instance_id: &str,
        primary_region: &str,
        replica_region: &str,
    ) -> Result<Observed, ProviderError> {
        let mut o = Observed::default();
        let v = self
            .call(
                acct,
                primary_region,
                "DescribeInstances",
                json!({"Registryids": [instance_id], "AllRegion": true}),
            )
            .await?;
        let Some(r) = v
            .get("Registries")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|r| text(r, "RegistryId") == instance_id))
        else {
            return Ok(o);
        };
        o.instance = Some(Instance {
            id: instance_id.to_string(),
            region: text(r, "RegionName"),
            kind: text(r, "RegistryType"),
            status: text(r, "Status"),
        });
        o.replica = self.replica(acct, instance_id, primary_region, replica_region).await?;
        let Some(rep) = o.replica.clone().filter(|r| r.status == "Running") else {
            return Ok(o);
        };
        let v = self
            .call(
                acct,
                primary_region,
                "DescribeReplicationInstanceSyncStatus",
                json!({"RegistryId": instance_id, "ReplicationRegistryId": rep.id,
                       "ReplicationRegionId": rep.region_id, "ShowReplicationLog": true,
                       "Offset": 0, "Limit": 20}),
            )
            .await?;
        o.sync_status = v.get("ReplicationStatus").and_then(Value::as_str).map(String::from);
        o.sync_time = v.get("ReplicationTime").and_then(time);
        o.log = v
            .get("ReplicationLog")
            .filter(|e| e.is_object())
            .map(|e| LogEntry {
                resource_type: text(e, "ResourceType"),
                source: text(e, "Source"),
                destination: text(e, "Destination"),
                status: text(e, "Status"),
                end_time: e.get("EndTime").and_then(time),
            })
            .filter(|e| !e.status.is_empty() || !e.source.is_empty());
        Ok(o)
    }

    /// The primary's replica in `replica_region`, if there is one.
    async fn replica(
        &self,
        acct: &Account,
        instance_id: &str,
        primary_region: &str,
        replica_region: &str,
    ) -> Result<Option<Replica>, ProviderError> {
        let v = self
            .call(
                acct,
                primary_region,
                "DescribeReplicationInstances",
                json!({"RegistryId": instance_id, "Offset": 0, "Limit": 100}),
            )
            .await?;
        Ok(v.get("ReplicationRegistries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| text(r, "ReplicationRegionName") == replica_region)
            .map(|r| Replica {
                id: text(r, "ReplicationRegistryId"),
                region_id: r.get("ReplicationRegionId").and_then(Value::as_i64).unwrap_or(0),
                region: replica_region.to_string(),
                status: text(r, "Status"),
            }))
    }

    /// Create the replica in `replica_region` (by region name).
    pub async fn create(
        &self,
        acct: &Account,
        instance_id: &str,
        primary_region: &str,
        replica_region: &str,
    ) -> Result<String, ProviderError> {
        let v = self
            .call(
                acct,
                primary_region,
                "CreateReplicationInstance",
                json!({"RegistryId": instance_id, "ReplicationRegionName": replica_region}),
            )
            .await?;
        Ok(text(&v, "ReplicationRegistryId"))
    }

    /// Delete the replica (absent is success). Returns what was deleted.
    pub async fn delete(
        &self,
        acct: &Account,
        instance_id: &str,
        primary_region: &str,
        replica_region: &str,
    ) -> Result<Option<String>, ProviderError> {
        let found = match self.replica(acct, instance_id, primary_region, replica_region).await {
            Err(e) if e.not_found => None, // the primary itself is gone
            r => r?,
        };
        let Some(r) = found else { return Ok(None) };
        match self
            .call(
                acct,
                primary_region,
                "DeleteReplicationInstance",
                json!({"RegistryId": instance_id, "ReplicationRegistryId": r.id,
                       "ReplicationRegionId": r.region_id}),
            )
            .await
        {
            Ok(_) => Ok(Some(r.id)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }
}
