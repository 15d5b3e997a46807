//! The Alibaba Cloud ECS stand-in (see the parent module).

use super::*;

fn ali_err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"Code": code, "Message": msg, "RequestId": "req-1"})),
    )
        .into_response()
}

fn ali_image(i: &Img) -> Value {
    let mut v = json!({
        "ImageId": i.id, "ImageName": i.name, "Description": i.description, "Size": i.size_gib,
        "Status": if i.failed() { "CreateFailed" } else if i.ready() { "Available" } else { "Creating" },
        "Progress": format!("{}%", i.progress()), "ImageOwnerAlias": "self", "IsCopied": i.copy.is_some(),
        "CreationTime": created_text(i.created_unix, "%Y-%m-%dT%H:%M:%SZ"),
        "DiskDeviceMappings": {"DiskDeviceMapping": [{"Encrypted": i.encrypted, "Size": i.size_gib.to_string()}]},
        "Tags": {"Tag": i.tags.iter().map(|(k, v)| json!({"TagKey": k, "TagValue": v})).collect::<Vec<_>>()},
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

/// `PageNumber` (from 1) and `PageSize` (default 10, at most 100), as ECS pages its lists.
fn page_of(p: &BTreeMap<String, String>) -> Option<(usize, usize)> {
    let number: usize = p.get("PageNumber").map_or(Some(1), |v| v.parse().ok())?;
    let size: usize = p.get("PageSize").map_or(Some(10), |v| v.parse().ok())?;
    (number >= 1 && (1..=100).contains(&size)).then_some((number, size))
}

/// Alibaba Cloud STS (`2015-04-01`): `AssumeRoleWithOIDC` with a web identity token, and
/// `AssumeRole` with keys (a Secret's, or handed-out ones).
fn sts(st: &State, p: &BTreeMap<String, String>) -> Response {
    let role = p.get("RoleArn").cloned().unwrap_or_default();
    let mut sts = st.sts.lock().unwrap();
    let r = match p.get("Action").map(String::as_str).unwrap_or("") {
        "AssumeRoleWithOIDC" => sts.web_identity(&role, p.get("OIDCToken").map(String::as_str).unwrap_or("")),
        "AssumeRole" => {
            let ak = p.get("AccessKeyId").cloned().unwrap_or_default();
            let caller = sts
                .session(&ak)
                .map(|x| x.account.clone())
                .unwrap_or_else(|| ALI_ACCOUNT.to_string());
            sts.assume(&caller, &role, p.get("ExternalId").map(String::as_str))
        }
        other => {
            return ali_err(
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                &format!("{other} is not an STS action"),
            );
        }
    };
    match r {
        Err((code, msg)) => {
            let code = match code {
                "InvalidIdentityToken" | "ExpiredTokenException" => "AuthenticationFail.OIDCToken.Invalid",
                "AccessDenied" => "NoPermission",
                c => c,
            };
            ali_err(StatusCode::BAD_REQUEST, code, &msg)
        }
        Ok(x) => axum::Json(json!({
            "RequestId": "req-1",
            "AssumedRoleUser": {"Arn": format!("acs:ram::{}:assumed-role/{}/{}", x.account, x.role.rsplit('/').next().unwrap_or(""), p.get("RoleSessionName").cloned().unwrap_or_default()), "AssumedRoleId": "3000:x"},
            "Credentials": {"AccessKeyId": x.ak, "AccessKeySecret": x.sk, "SecurityToken": x.token,
                "Expiration": created_text(x.expires_unix, "%Y-%m-%dT%H:%M:%SZ")},
        }))
        .into_response(),
    }
}

pub(super) async fn alibaba(st: &State, p: &BTreeMap<String, String>) -> Response {
    if p.get("Version").map(String::as_str) == Some("2015-04-01") {
        return sts(st, p);
    }
    let region = p.get("RegionId").cloned().unwrap_or_default();
    if region.is_empty() {
        return ali_err(
            StatusCode::BAD_REQUEST,
            "MissingRegionId",
            "RegionId is mandatory for this action.",
        );
    }
    let tags_of = |p: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        (1..=20)
            .filter_map(|n| {
                Some((
                    p.get(&format!("Tag.{n}.Key"))?.clone(),
                    p.get(&format!("Tag.{n}.Value")).cloned().unwrap_or_default(),
                ))
            })
            .collect()
    };
    match p.get("Action").map(String::as_str).unwrap_or("") {
        "DescribeImages" => {
            let want = tags_of(p);
            let statuses: Vec<&str> = p
                .get("Status")
                .map(|s| s.split(',').collect())
                .unwrap_or_else(|| vec!["Available"]);
            let Some((number, size)) = page_of(p) else {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "PageNumber must be at least 1 and PageSize 1 to 100.",
                );
            };
            let imgs = st.images.lock().unwrap();
            let list: Vec<Value> = imgs
                .iter()
                .filter(|i| i.region == region && i.listed())
                .filter(|i| p.get("ImageId").is_none_or(|x| *x == i.id))
                .filter(|i| p.get("ImageName").is_none_or(|x| *x == i.name))
                .filter(|i| want.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
                .map(ali_image)
                .filter(|v| statuses.contains(&v["Status"].as_str().unwrap_or("")))
                .collect();
            let total = list.len();
            let page: Vec<Value> = list.into_iter().skip((number - 1) * size).take(size).collect();
            axum::Json(json!({"Images": {"Image": page}, "TotalCount": total, "PageNumber": number, "PageSize": size, "RegionId": region, "RequestId": "req-1"})).into_response()
        }
        "CopyImage" => {
            let Some(dest) = p.get("DestinationRegionId").cloned() else {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "MissingDestinationRegionId",
                    "DestinationRegionId is mandatory",
                );
            };
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
                .cloned();
            let Some(src) = src else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if !src.ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The specified image is not available.",
                );
            }
            // ClientToken: the same token returns the same copy (idempotence).
            if let Some(t) = p.get("ClientToken")
                && let Some(id) = st.client_tokens.lock().unwrap().get(t).cloned()
            {
                return axum::Json(json!({"ImageId": id, "RequestId": "req-1"})).into_response();
            }
            let tags = tags_of(p);
            if p.keys().any(|k| k.starts_with("Tag.21.")) {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "InvalidTagKey.Malformed",
                    "At most 20 tags are allowed.",
                );
            }
            let encrypted = p.get("Encrypted").map(String::as_str) == Some("true");
            if dest == region && !encrypted {
                return ali_err(
                    StatusCode::BAD_REQUEST,
                    "InvalidRegionId.Malformed",
                    "The destination region must differ unless the copy is encrypted.",
                );
            }
            let id = format!("m-{}", st.seq.fetch_add(1, Ordering::SeqCst) + 1000);
            st.images.lock().unwrap().push(Img {
                id: id.clone(),
                region: dest.clone(),
                project: dest.clone(),
                name: p.get("DestinationImageName").cloned().unwrap_or_default(),
                description: p.get("DestinationDescription").cloned().unwrap_or_default(),
                size_gib: src.size_gib,
                extra: json!({}),
                tags,
                copy: Some((Instant::now(), copy_time(st, &dest))),
                encrypted,
                snapshots: vec![],
                created_unix: now_unix(),
                listed_at: st.listed_at(),
                fails: st.copy_fails(),
            });
            if let Some(t) = p.get("ClientToken") {
                st.client_tokens.lock().unwrap().insert(t.clone(), id.clone());
            }
            hold(st).await;
            axum::Json(json!({"ImageId": id, "RequestId": "req-1"})).into_response()
        }
        "CancelCopyImage" => {
            let mut imgs = st.images.lock().unwrap();
            let Some(pos) = imgs
                .iter()
                .position(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
            else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if imgs[pos].ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The image is not being copied.",
                );
            }
            imgs.remove(pos);
            axum::Json(json!({"RequestId": "req-1"})).into_response()
        }
        "DescribeImageSharePermission" => {
            let id = p.get("ImageId").cloned().unwrap_or_default();
            if !st.has_image(&id, &region) {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            }
            let list: Vec<Value> = st
                .listed_members(&id)
                .iter()
                .map(|a| json!({"AliyunId": a, "SharedTime": "2026-12-03T00:00:00Z"}))
                .collect();
            axum::Json(
                json!({"ImageId": id, "RegionId": region, "RequestId": "req-1", "TotalCount": list.len(),
                "PageNumber": 1, "PageSize": 100, "Accounts": {"Account": list}, "ShareGroups": {"ShareGroup": []}}),
            )
            .into_response()
        }
        "ModifyImageSharePermission" => {
            let id = p.get("ImageId").cloned().unwrap_or_default();
            if !st.has_image(&id, &region) {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            }
            let mut all = st.members.lock().unwrap();
            let list = all.entry(id.clone()).or_default();
            for n in 1..=10 {
                if let Some(a) = p.get(&format!("AddAccount.{n}")) {
                    if list.len() >= 50 {
                        return ali_err(
                            StatusCode::FORBIDDEN,
                            "QuotaExceed.ShareImageUser",
                            "The image is shared with too many accounts.",
                        );
                    }
                    if !list.iter().any(|(m, _)| m == a) {
                        list.push((a.clone(), "shared".into()));
                        st.member_changed(&id, a, false);
                    }
                }
                if let Some(a) = p.get(&format!("RemoveAccount.{n}")) {
                    if list.iter().any(|(m, _)| m == a) {
                        st.member_changed(&id, a, true);
                    }
                    list.retain(|(m, _)| m != a);
                }
            }
            axum::Json(json!({"RequestId": "req-1"})).into_response()
        }
        "DeleteImage" => {
            let mut imgs = st.images.lock().unwrap();
            let Some(pos) = imgs
                .iter()
                .position(|i| Some(&i.id) == p.get("ImageId") && i.region == region)
            else {
                return ali_err(
                    StatusCode::NOT_FOUND,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                );
            };
            if !imgs[pos].ready() {
                return ali_err(
                    StatusCode::FORBIDDEN,
                    "IncorrectImageStatus",
                    "The image is being created.",
                );
            }
            imgs.remove(pos);
            axum::Json(json!({"RequestId": "req-1"})).into_response()
        }
        other => ali_err(
            StatusCode::BAD_REQUEST,
            "InvalidAction.NotFound",
            &format!("{other} is not an action"),
        ),
    }
}
