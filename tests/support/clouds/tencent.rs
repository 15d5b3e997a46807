//! The Tencent Cloud CVM stand-in (see the parent module).

use super::*;

fn tc_image(i: &Img) -> Value {
    let created = k8s_openapi::jiff::Timestamp::from_second(i.created_unix).unwrap();
    let mut v = json!({
        "ImageId": i.id, "ImageName": i.name, "ImageDescription": i.description,
        "ImageState": if i.failed() { "CREATEFAILED" } else if i.ready() { "NORMAL" } else { "SYNCING" },
        "SyncPercent": i.progress(), "ImageType": "PRIVATE_IMAGE", "ImageSize": i.size_gib,
        "CreatedTime": created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "SnapshotSet": i.snapshots.iter().map(|s| json!({"SnapshotId": s, "DiskUsage": "SYSTEM_DISK", "DiskSize": i.size_gib})).collect::<Vec<_>>(),
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

/// Tencent Cloud STS (`2018-08-13`): `AssumeRoleWithWebIdentity` (unsigned) and `AssumeRole`.
pub(super) fn sts(st: &State, b: &Value, hdr: &BTreeMap<String, String>) -> Response {
    let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut sts = st.sts.lock().unwrap();
    let r = match hdr.get("x-tc-action").map(String::as_str).unwrap_or("") {
        "AssumeRoleWithWebIdentity" => sts.web_identity(&text("RoleArn"), &text("WebIdentityToken")),
        "AssumeRole" => {
            let ak = hdr
                .get("authorization")
                .and_then(|a| auth_field(a, "Credential"))
                .and_then(|c| c.split('/').next())
                .unwrap_or("")
                .to_string();
            let caller = sts
                .session(&ak)
                .map(|x| x.account.clone())
                .unwrap_or_else(|| TC_ACCOUNT.to_string());
            let ext = b.get("ExternalId").and_then(Value::as_str);
            sts.assume(&caller, &text("RoleArn"), ext)
        }
        other => return tc_err("InvalidAction", &format!("{other} is not an STS action")),
    };
    match r {
        Err((code, msg)) => {
            let code = match code {
                "InvalidIdentityToken" | "ExpiredTokenException" => "InvalidParameter.WebIdentityTokenError",
                "AccessDenied" => "UnauthorizedOperation",
                c => c,
            };
            tc_err(code, &msg)
        }
        Ok(x) => tc_ok(json!({
            "Credentials": {"Token": x.token, "TmpSecretId": x.ak, "TmpSecretKey": x.sk},
            "ExpiredTime": x.expires_unix,
            "Expiration": created_text(x.expires_unix, "%Y-%m-%dT%H:%M:%SZ"),
        })),
    }
}

pub(super) async fn tencent(st: &State, b: &Value, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr.get("x-tc-region").cloned().unwrap_or_default();
    if hdr.get("x-tc-version").map(String::as_str) == Some("2018-08-13") {
        return sts(st, b, hdr);
    }
    if hdr.get("x-tc-version").map(String::as_str) != Some("2017-03-12") {
        return tc_err("InvalidParameter", "X-TC-Version must be 2017-03-12");
    }
    let strs = |k: &str| -> Vec<String> {
        b.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    match hdr.get("x-tc-action").map(String::as_str).unwrap_or("") {
        "DescribeImages" => {
            let ids = strs("ImageIds");
            let filter = |name: &str| -> Option<Vec<String>> {
                b.get("Filters")?
                    .as_array()?
                    .iter()
                    .find(|f| f["Name"] == name)
                    .map(|f| {
                        f["Values"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
            };
            let names = filter("image-name");
            // Limit: default 20, at most 100; Offset from 0.
            let limit = b.get("Limit").map_or(Some(20), Value::as_u64).unwrap_or(0) as usize;
            let offset = b.get("Offset").map_or(Some(0), Value::as_u64).unwrap_or(u64::MAX) as usize;
            if !(1..=100).contains(&limit) || offset == u64::MAX as usize {
                return tc_err("InvalidParameterValue.LimitExceeded", "Limit must be 1 to 100.");
            }
            let imgs = st.images.lock().unwrap();
            let here: Vec<&Img> = imgs.iter().filter(|i| i.region == region && i.listed()).collect();
            for id in &ids {
                if !here.iter().any(|i| i.id == *id) {
                    return tc_err("InvalidImageId.NotFound", &format!("The image {id} does not exist."));
                }
            }
            let list: Vec<Value> = here
                .iter()
                .filter(|i| ids.is_empty() || ids.contains(&i.id))
                .filter(|i| names.as_ref().is_none_or(|n| n.contains(&i.name)))
                .map(|i| tc_image(i))
                .filter(|v| filter("image-type").is_none_or(|t| t.iter().any(|t| v["ImageType"] == t.as_str())))
                .collect();
            let total = list.len();
            let page: Vec<Value> = list.into_iter().skip(offset).take(limit).collect();
            tc_ok(json!({"ImageSet": page, "TotalCount": total}))
        }
        "SyncImages" => {
            let ids = strs("ImageIds");
            let dests = strs("DestinationRegions");
            if ids.len() != 1 || dests.is_empty() {
                return tc_err(
                    "InvalidParameterValue",
                    "one ImageIds and at least one DestinationRegions are required",
                );
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == ids[0] && i.region == region)
                .cloned();
            let Some(src) = src else {
                return tc_err("InvalidImageId.NotFound", "The image does not exist.");
            };
            if !src.ready() {
                return tc_err("InvalidImageId.IncorrectState", "The image is not in the NORMAL state.");
            }
            let encrypt = b.get("Encrypt").and_then(Value::as_bool).unwrap_or(false);
            for d in &dests {
                if d.starts_with("ap-unsupported") {
                    return tc_err(
                        "InvalidRegion.Unavailable",
                        &format!("The region {d} does not support image sync."),
                    );
                }
                if (*d == region) != encrypt {
                    return tc_err(
                        "InvalidParameterValue.InvalidRegion",
                        "custom images sync to other regions; encrypted copies stay in the source region",
                    );
                }
            }
            if b.get("DryRun").and_then(Value::as_bool) == Some(true) {
                return tc_err(
                    "DryRunOperation",
                    "The request would have succeeded, but DryRun was set.",
                );
            }
            let name = b
                .get("ImageName")
                .and_then(Value::as_str)
                .unwrap_or(&src.name)
                .to_string();
            let mut set = Vec::new();
            for d in &dests {
                let id = format!("img-{:08x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0x5e000);
                st.images.lock().unwrap().push(Img {
                    id: id.clone(),
                    region: d.clone(),
                    project: d.clone(),
                    name: name.clone(),
                    description: src.description.clone(),
                    size_gib: src.size_gib,
                    extra: json!({}),
                    tags: BTreeMap::new(),
                    copy: Some((Instant::now(), copy_time(st, d))),
                    encrypted: encrypt,
                    snapshots: vec![format!("snap-{id}")],
                    created_unix: now_unix(),
                    listed_at: st.listed_at(),
                    fails: st.copy_fails(),
                });
                set.push(json!({"ImageId": id, "Region": d}));
            }
            hold(st).await;
            if b.get("ImageSetRequired").and_then(Value::as_bool) == Some(true) {
                tc_ok(json!({"ImageSet": set}))
            } else {
                tc_ok(json!({}))
            }
        }
        "DeleteImages" => {
            let ids = strs("ImageIds");
            let mut imgs = st.images.lock().unwrap();
            for id in &ids {
                match imgs.iter().find(|i| i.id == *id && i.region == region) {
                    None => return tc_err("InvalidImageId.NotFound", "The image does not exist."),
                    Some(i) if !i.ready() => {
                        return tc_err("InvalidImageId.IncorrectState", "The image is being synced.");
                    }
                    _ => {}
                }
            }
            // DeleteBindedSnap: the images' snapshots are deleted with them.
            if b.get("DeleteBindedSnap").and_then(Value::as_bool) == Some(true) {
                let snaps = imgs
                    .iter()
                    .filter(|i| ids.contains(&i.id) && i.region == region)
                    .flat_map(|i| i.snapshots.clone());
                st.deleted_snapshots.lock().unwrap().extend(snaps);
            }
            imgs.retain(|i| !(ids.contains(&i.id) && i.region == region));
            tc_ok(json!({}))
        }
        "DescribeImageSharePermission" | "ModifyImageSharePermission" => {
            let id = b.get("ImageId").and_then(Value::as_str).unwrap_or_default().to_string();
            if !st.has_image(&id, &region) {
                return tc_err("InvalidImageId.NotFound", "The image does not exist.");
            }
            if hdr.get("x-tc-action").map(String::as_str) == Some("DescribeImageSharePermission") {
                let set: Vec<Value> = st
                    .listed_members(&id)
                    .iter()
                    .map(|a| json!({"AccountId": a, "CreatedTime": "2026-12-03T00:00:00Z"}))
                    .collect();
                return tc_ok(json!({"SharePermissionSet": set}));
            }
            let mut all = st.members.lock().unwrap();
            let list = all.entry(id.clone()).or_default();
            let accounts = strs("AccountIds");
            match b.get("Permission").and_then(Value::as_str) {
                Some("SHARE") => {
                    if let Some(a) = accounts.iter().find(|a| list.iter().any(|(m, _)| m == *a)) {
                        return tc_err(
                            "FailedOperation.AccountAlreadyExists",
                            &format!("The image is already shared with {a}."),
                        );
                    }
                    for a in accounts {
                        st.member_changed(&id, &a, false);
                        list.push((a, "shared".into()));
                    }
                }
                Some("CANCEL") => {
                    if let Some(a) = accounts.iter().find(|a| !list.iter().any(|(m, _)| m == *a)) {
                        return tc_err(
                            "InvalidParameterValue.InvalidImageId",
                            &format!("The image is not shared with {a}."),
                        );
                    }
                    for a in &accounts {
                        st.member_changed(&id, a, true);
                    }
                    list.retain(|(m, _)| !accounts.contains(m));
                }
                _ => return tc_err("InvalidParameterValue", "Permission must be SHARE or CANCEL."),
            }
            tc_ok(json!({}))
        }
        other => tc_err("InvalidAction", &format!("{other} is not an action")),
    }
}
