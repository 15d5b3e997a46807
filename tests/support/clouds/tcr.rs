//! The Tencent Container Registry (TCR) stand-in (see the parent module).

use super::*;

/// Region ids TCR reports for replicas (a few, as in Tencent's region list).
fn tcr_region_id(r: &str) -> i64 {
    match r {
        "ap-guangzhou" => 1,
        "ap-shanghai" => 4,
        "ap-hongkong" => 5,
        "ap-beijing" => 8,
        "ap-singapore" => 9,
        "ap-chengdu" => 16,
        _ => 99,
    }
}

pub(super) async fn tcr(st: &State, b: &Value, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr.get("x-tc-region").cloned().unwrap_or_default();
    if hdr.get("x-tc-version").map(String::as_str) == Some("2018-08-13") {
        return super::tencent::sts(st, b, hdr);
    }
    if hdr.get("x-tc-version").map(String::as_str) != Some("2019-09-24") {
        return tc_err("InvalidParameter", "X-TC-Version must be 2019-09-24");
    }
    let registry = b.get("RegistryId").and_then(Value::as_str).unwrap_or("").to_string();
    let instance = |id: &str| st.tcr_instances.lock().unwrap().iter().find(|i| i.0 == id).cloned();
    // A replica is Creating for its first second, then Running.
    let replica_json = |r: &TcrReplica| {
        json!({"RegistryId": r.0, "ReplicationRegistryId": r.1, "ReplicationRegionName": r.2,
               "ReplicationRegionId": r.3,
               "Status": if r.4.elapsed() >= Duration::from_secs(1) { "Running" } else { "Creating" },
               "CreatedAt": "2026-11-24T08:00:00Z"})
    };
    match hdr.get("x-tc-action").map(String::as_str).unwrap_or("") {
        "DescribeInstances" => {
            let ids: Vec<String> = b["Registryids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            let list: Vec<Value> = st
                .tcr_instances
                .lock()
                .unwrap()
                .iter()
                .filter(|i| ids.contains(&i.0))
                .map(|i| json!({"RegistryId": i.0, "RegistryName": i.0, "RegionName": i.1, "RegistryType": i.2, "Status": "Running"}))
                .collect();
            tc_ok(json!({"Registries": list, "TotalCount": list.len()}))
        }
        "DescribeReplicationInstances" => {
            if instance(&registry).is_none() {
                return tc_err("ResourceNotFound.TcrResourceNotFound", "The instance does not exist.");
            }
            let list: Vec<Value> = st
                .tcr_replicas
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.0 == registry)
                .map(replica_json)
                .collect();
            tc_ok(json!({"ReplicationRegistries": list, "TotalCount": list.len()}))
        }
        "CreateReplicationInstance" => {
            let Some(i) = instance(&registry) else {
                return tc_err("ResourceNotFound.TcrResourceNotFound", "The instance does not exist.");
            };
            if i.2 != "premium" {
                return tc_err("UnsupportedOperation", "Only premium instances support replication.");
            }
            if i.1 != region {
                return tc_err("InvalidParameter", "X-TC-Region must be the instance's region.");
            }
            {
                let mut last = st.tcr_last_create.lock().unwrap();
                if last.is_some_and(|t| t.elapsed() < Duration::from_millis(950)) {
                    return tc_err(
                        "RequestLimitExceeded",
                        "CreateReplicationInstance allows 1 request per second.",
                    );
                }
                *last = Some(Instant::now());
            }
            let name = b
                .get("ReplicationRegionName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name == "ap-nanjing" {
                return tc_err(
                    "UnsupportedOperation",
                    "Replication to this region is not supported for the instance.",
                );
            }
            if name.is_empty() || name == i.1 {
                return tc_err(
                    "InvalidParameterValue",
                    "The replica region must differ from the instance's.",
                );
            }
            let mut reps = st.tcr_replicas.lock().unwrap();
            if reps.iter().any(|r| r.0 == registry && r.2 == name) {
                return tc_err("ResourceInUse", "A replica already exists in this region.");
            }
            let id = format!("{registry}-{name}");
            reps.push((
                registry.clone(),
                id.clone(),
                name.clone(),
                tcr_region_id(&name),
                Instant::now(),
            ));
            tc_ok(json!({"ReplicationRegistryId": id}))
        }
        "DescribeReplicationInstanceSyncStatus" => {
            let rid = b.get("ReplicationRegistryId").and_then(Value::as_str).unwrap_or("");
            let rep = st
                .tcr_replicas
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.0 == registry && r.1 == rid)
                .cloned();
            let Some(rep) = rep else {
                return tc_err("ResourceNotFound", "The replica does not exist.");
            };
            if b.get("ReplicationRegionId").and_then(Value::as_i64) != Some(rep.3) {
                return tc_err(
                    "InvalidParameterValue",
                    "ReplicationRegionId does not match the replica.",
                );
            }
            // One ReplicationLog object (the latest entry) and no count, as the API answers.
            let last = st.tcr_log.lock().unwrap().last().cloned();
            let failed = last.as_ref().is_some_and(|e| e["Status"] == "Failed");
            let mut v = json!({"ReplicationStatus": if failed { "Failed" } else { "Success" },
                         "ReplicationTime": "2026-11-24 08:00:05"});
            if let Some(e) = last {
                v["ReplicationLog"] = e;
            }
            tc_ok(v)
        }
        "DeleteReplicationInstance" => {
            let rid = b
                .get("ReplicationRegistryId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut reps = st.tcr_replicas.lock().unwrap();
            let before = reps.len();
            reps.retain(|r| !(r.0 == registry && r.1 == rid));
            if reps.len() == before {
                tc_err("ResourceNotFound", "The replica does not exist.")
            } else {
                tc_ok(json!({}))
            }
        }
        other => tc_err("InvalidAction", &format!("{other} is not an action")),
    }
}
