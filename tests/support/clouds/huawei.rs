//! The Huawei Cloud IMS stand-in (see the parent module).

use super::*;

fn hw_err(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": msg}}))).into_response()
}

fn hw_image(i: &Img) -> Value {
    let mut v = json!({
        "id": i.id, "name": i.name, "__description": i.description,
        "status": if i.ready() { "active" } else { "saving" },
        "__imagetype": "private", "disk_format": "zvhd2", "visibility": "private",
        "__image_size": (i.size_gib << 30).to_string(), "min_disk": i.size_gib,
        "created_at": created_text(i.created_unix, "%Y-%m-%dT%H:%M:%SZ"),
        // The list API's filter form; the operator also reads `key.value`.
        "tags": i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    // What the SDK's ImageInfo has; `__whole_image` is not a field of the answer (only the
    // list API's filter).
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        if k != "__whole_image" {
            v[k] = x.clone();
        }
    }
    v
}

fn whole_image(i: &Img) -> bool {
    i.extra.get("__whole_image").and_then(Value::as_str) == Some("true")
}

fn project_region(pid: &str) -> Option<(String, String)> {
    let name = pid.strip_prefix("p-")?;
    Some((name.split('_').next().unwrap_or(name).to_string(), name.to_string()))
}

/// IAM's short-lived keys: `CreateTokenWithIdToken` (a web identity token of the IdP
/// `X-Idp-Id`: the IAM token is the session's token), `CreateTemporaryAccessKeyByToken` (that
/// token), `CreateTemporaryAccessKeyByAgency` (an agency, with keys).
fn iam_sts(st: &State, method: &Method, path: &str, body: &Value, hdr: &BTreeMap<String, String>) -> Option<Response> {
    if method != Method::POST {
        return None;
    }
    let refused = |(code, msg): super::sts::Refusal| {
        let code = match code {
            "AccessDenied" => "IAM.0002",
            _ => "IAM.0001",
        };
        hw_err(StatusCode::FORBIDDEN, code, &msg)
    };
    let credential = |x: &super::sts::Session| {
        (
            StatusCode::CREATED,
            axum::Json(
                json!({"credential": {"access": x.ak, "secret": x.sk, "securitytoken": x.token,
                "expires_at": created_text(x.expires_unix, "%Y-%m-%dT%H:%M:%S.000000Z")}}),
            ),
        )
            .into_response()
    };
    let mut sts = st.sts.lock().unwrap();
    match path {
        "/v3.0/OS-AUTH/id-token/tokens" => {
            let idp = hdr.get("x-idp-id").cloned().unwrap_or_default();
            let jwt = body.pointer("/auth/id_token/id").and_then(Value::as_str).unwrap_or("");
            Some(match sts.web_identity(&idp, jwt) {
                Err(e) => refused(e),
                Ok(x) => (
                    StatusCode::CREATED,
                    [("X-Subject-Token", x.token.clone())],
                    axum::Json(json!({"token": {"expires_at": created_text(x.expires_unix, "%Y-%m-%dT%H:%M:%S.000000Z"),
                        "methods": ["mapped"], "issued_at": created_text(super::now_unix(), "%Y-%m-%dT%H:%M:%S.000000Z")}})),
                )
                    .into_response(),
            })
        }
        "/v3.0/OS-CREDENTIAL/securitytokens" => {
            let methods = body.pointer("/auth/identity/methods").cloned().unwrap_or_default();
            if methods == json!(["token"]) {
                let token = body
                    .pointer("/auth/identity/token/id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(x) = sts.sessions.iter().find(|x| x.token == token).cloned() else {
                    return Some(hw_err(StatusCode::UNAUTHORIZED, "IAM.0001", "The token is invalid."));
                };
                // Keys of the same principal, as IAM gives them for its token.
                return Some(credential(&x));
            }
            let a = body.pointer("/auth/identity/assume_role").cloned().unwrap_or_default();
            let urn = format!(
                "iam::{}:agency:{}",
                a["domain_id"].as_str().unwrap_or(""),
                a["agency_name"].as_str().unwrap_or("")
            );
            let ak = auth_field(hdr.get("authorization").map(String::as_str).unwrap_or(""), "Access").unwrap_or("");
            let caller = sts
                .session(ak)
                .map(|x| x.account.clone())
                .unwrap_or_else(|| HW_ACCOUNT.to_string());
            Some(match sts.assume(&caller, &urn, None) {
                Err(e) => refused(e),
                Ok(x) => credential(&x),
            })
        }
        _ => None,
    }
}

pub(super) async fn huawei(
    st: &State,
    method: &Method,
    path: &str,
    params: &BTreeMap<String, String>,
    body: &Value,
    hdr: &BTreeMap<String, String>,
) -> Response {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(r) = iam_sts(st, method, path, body, hdr) {
        return r;
    }
    if method == Method::GET && path == "/v3/projects" {
        let name = params.get("name").cloned().unwrap_or_default();
        return axum::Json(json!({"projects": [{"id": format!("p-{name}"), "name": name}]})).into_response();
    }
    if let Some(r) = members(st, method, &seg, body, hdr) {
        return r;
    }
    let Some((region, project)) = hdr.get("x-project-id").and_then(|p| project_region(p)) else {
        return hw_err(StatusCode::BAD_REQUEST, "APIGW.0101", "X-Project-Id is required");
    };
    match (method.clone(), seg.as_slice()) {
        (Method::GET, ["v2", "cloudimages"]) => {
            let imgs = st.images.lock().unwrap();
            let list: Vec<Value> = imgs
                .iter()
                .filter(|i| i.region == region && i.project == project && i.listed())
                .filter(|i| params.get("id").is_none_or(|x| *x == i.id))
                .filter(|i| params.get("name").is_none_or(|x| *x == i.name))
                .filter(|i| {
                    params
                        .get("__whole_image")
                        .is_none_or(|x| (x == "true") == whole_image(i))
                })
                // The tag filter is `tag=<key>=<value>`.
                .filter(|i| {
                    params
                        .get("tag")
                        .is_none_or(|t| i.tags.iter().any(|(k, v)| format!("{k}={v}") == *t))
                })
                .map(hw_image)
                .collect();
            axum::Json(json!({"images": list})).into_response()
        }
        (Method::POST, ["v1", "cloudimages", id, "cross_region_copy"]) => {
            for f in ["name", "region", "project_name", "agency_name"] {
                if body.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return hw_err(StatusCode::BAD_REQUEST, "IMG.0001", &format!("{f} is required"));
                }
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == *id && i.region == region)
                .cloned();
            let Some(src) = src else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist");
            };
            // vault_id: required for full-ECS images (CopyImageCrossRegionRequestBody).
            if whole_image(&src) && body.get("vault_id").and_then(Value::as_str).is_none_or(str::is_empty) {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0001",
                    "vault_id is required for a full-ECS image",
                );
            }
            let dest_region = body["region"].as_str().unwrap().to_string();
            if dest_region == region {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0204",
                    "The destination region cannot be the source region",
                );
            }
            let in_flight = st.images.lock().unwrap().iter().filter(|i| !i.ready()).count();
            if in_flight >= 5 {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0190",
                    "The number of concurrent replications exceeds the quota (5)",
                );
            }
            let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let new_id = format!("7e1c0d2a-0000-4000-8000-{n:012}");
            let job = format!("ff8080814dbd65d7014dbe0d84db{n:04}");
            st.images.lock().unwrap().push(Img {
                id: new_id.clone(),
                region: dest_region.clone(),
                project: body["project_name"].as_str().unwrap().to_string(),
                name: body["name"].as_str().unwrap().to_string(),
                description: body
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                size_gib: src.size_gib,
                extra: json!({}),
                tags: BTreeMap::new(),
                copy: Some((Instant::now(), copy_time(st, &dest_region))),
                encrypted: false,
                snapshots: vec![],
                created_unix: now_unix(),
                listed_at: st.listed_at(),
                fails: false,
            });
            st.jobs.lock().unwrap().insert(job.clone(), (src.id.clone(), new_id));
            hold(st).await;
            axum::Json(json!({"job_id": job})).into_response()
        }
        // ShowJobProgress. Which image `entities.image_id` names is not settled by the SDK: the
        // stand-in names the source image, so the client must find the copy in the destination.
        (Method::GET, ["v1", "cloudimages", "job", job]) if job.starts_with("job-member-") => {
            member_job_status(st, job)
        }
        (Method::GET, ["v1", "cloudimages", "job", job]) => {
            let Some((src_id, img_id)) = st.jobs.lock().unwrap().get(*job).cloned() else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0005", "The job does not exist");
            };
            let img = st.images.lock().unwrap().iter().find(|i| i.id == img_id).cloned();
            let job_json = |status: &str, entities: Value| {
                json!({"status": status, "job_id": job, "job_type": "imsCrossRegionCopyJob",
                    "begin_time": "2026-11-24T08:00:00.000Z", "end_time": "", "entities": entities})
            };
            match img {
                Some(i) if i.ready() => {
                    axum::Json(job_json("SUCCESS", json!({"image_id": src_id, "process_percent": 1.0}))).into_response()
                }
                Some(i) => axum::Json(job_json(
                    "RUNNING",
                    json!({"image_id": src_id, "process_percent": i.progress() as f64 / 100.0}),
                ))
                .into_response(),
                None => {
                    let mut v = job_json("FAIL", json!({"image_id": src_id}));
                    v["fail_reason"] = json!("the destination image was deleted");
                    v["error_code"] = json!("IMG.0103");
                    axum::Json(v).into_response()
                }
            }
        }
        // AddImageTag is POST (a PUT is answered as an unknown API, as the gateway does).
        (Method::POST, ["v2", _pid, "images", id, "tags"]) => {
            let mut imgs = st.images.lock().unwrap();
            let Some(i) = imgs.iter_mut().find(|i| i.id == *id && i.region == region) else {
                return hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist");
            };
            let (Some(k), Some(v)) = (
                body.pointer("/tag/key").and_then(Value::as_str),
                body.pointer("/tag/value").and_then(Value::as_str),
            ) else {
                return hw_err(
                    StatusCode::BAD_REQUEST,
                    "IMG.0001",
                    "tag.key and tag.value are required",
                );
            };
            i.tags.insert(k.into(), v.into());
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::DELETE, ["v2", "images", id]) => {
            let mut imgs = st.images.lock().unwrap();
            let before = imgs.len();
            imgs.retain(|i| !(i.id == *id && i.region == region));
            if imgs.len() == before {
                hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist")
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => hw_err(StatusCode::NOT_FOUND, "APIGW.0101", "The API does not exist"),
    }
}

/// Apply the member jobs that have ended successfully (a job that fails changes nothing).
fn settle_member_jobs(st: &State) {
    let mut jobs = st.member_jobs.lock().unwrap();
    let mut all = st.members.lock().unwrap();
    for j in jobs.iter_mut().filter(|j| !j.applied && j.done_at <= Instant::now()) {
        j.applied = true;
        if j.fails.is_some() {
            continue;
        }
        for (image, member, status) in &j.changes {
            let list = all.entry(image.clone()).or_default();
            match status {
                Some(st) => match list.iter_mut().find(|(m, _)| m == member) {
                    Some(e) => e.1 = st.clone(),
                    None => list.push((member.clone(), st.clone())),
                },
                None => list.retain(|(m, _)| m != member),
            }
        }
    }
}

/// ShowJobProgress of a member job: RUNNING until it ends, then SUCCESS or FAIL with the
/// job's `error_code` and `fail_reason`.
fn member_job_status(st: &State, job: &str) -> Response {
    settle_member_jobs(st);
    let Some(j) = st.member_jobs.lock().unwrap().iter().find(|j| j.id == job).cloned() else {
        return hw_err(StatusCode::NOT_FOUND, "IMG.0005", "The job does not exist");
    };
    let image = j.changes.first().map(|c| c.0.clone()).unwrap_or_default();
    let mut v = json!({"job_id": j.id, "job_type": "batchAddMembersJob", "begin_time": "2026-12-07T08:00:00.000Z",
        "end_time": "", "status": "RUNNING", "entities": {"image_id": image}});
    if j.applied {
        v["status"] = json!(if j.fails.is_some() { "FAIL" } else { "SUCCESS" });
        v["end_time"] = json!("2026-12-07T08:00:05.000Z");
        if let Some((code, reason)) = &j.fails {
            v["error_code"] = json!(code);
            v["fail_reason"] = json!(reason);
        }
    }
    axum::Json(v).into_response()
}

/// Image members: GlanceListImageMembers, and BatchAddMembers / BatchUpdateMembers (only the
/// member itself, by its X-Project-Id, may accept) / BatchDeleteMembers, each answering a job id.
fn members(
    st: &State,
    method: &Method,
    seg: &[&str],
    body: &Value,
    hdr: &BTreeMap<String, String>,
) -> Option<Response> {
    let strs = |k: &str| -> Vec<String> {
        body.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    let known = |id: &str| st.images.lock().unwrap().iter().any(|i| i.id == id);
    // Each call is a job: its change shows in the member list when the job has succeeded.
    let job = |changes: Vec<(String, String, Option<String>)>| {
        let id = format!("job-member-{:04}", st.seq.fetch_add(1, Ordering::SeqCst) + 1);
        let p = st.profile.lock().unwrap().clone();
        st.member_jobs.lock().unwrap().push(MemberJob {
            id: id.clone(),
            done_at: Instant::now() + p.member_job,
            fails: p.member_job_fails,
            changes,
            applied: false,
        });
        axum::Json(json!({"job_id": id})).into_response()
    };
    settle_member_jobs(st);
    let all = st.members.lock().unwrap();
    match (method.clone(), seg) {
        (Method::GET, ["v2", "images", image, "members"]) => {
            if !known(image) {
                return Some(hw_err(StatusCode::NOT_FOUND, "IMG.0027", "The image does not exist."));
            }
            let list: Vec<Value> = all
                .get(*image)
                .into_iter()
                .flatten()
                .map(|(m, status)| {
                    json!({"member_id": m, "image_id": image, "status": status, "created_at": "2026-12-03T00:00:00Z",
                           "updated_at": "2026-12-03T00:00:00Z", "schema": "/v2/schemas/member"})
                })
                .collect();
            Some(axum::Json(json!({"members": list, "schema": "/v2/schemas/members"})).into_response())
        }
        (Method::POST, ["v1", "cloudimages", "members"]) => {
            let mut changes = Vec::new();
            for image in strs("images") {
                if !known(&image) {
                    return Some(hw_err(StatusCode::BAD_REQUEST, "IMG.0027", "The image does not exist."));
                }
                let list = all.get(&image).cloned().unwrap_or_default();
                for p in strs("projects") {
                    if !list.iter().any(|(m, _)| *m == p) {
                        changes.push((image.clone(), p, Some("pending".to_string())));
                    }
                }
            }
            drop(all);
            Some(job(changes))
        }
        (Method::PUT, ["v1", "cloudimages", "members"]) => {
            let member = body
                .get("project_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if hdr.get("x-project-id") != Some(&member) {
                return Some(hw_err(
                    StatusCode::FORBIDDEN,
                    "IMG.0101",
                    "Only the member itself can accept or reject a shared image.",
                ));
            }
            let status = body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut changes = Vec::new();
            for image in strs("images") {
                if !all.get(&image).is_some_and(|l| l.iter().any(|(m, _)| *m == member)) {
                    return Some(hw_err(
                        StatusCode::BAD_REQUEST,
                        "IMG.0106",
                        "The image is not shared with the project.",
                    ));
                }
                changes.push((image, member.clone(), Some(status.clone())));
            }
            drop(all);
            Some(job(changes))
        }
        (Method::DELETE, ["v1", "cloudimages", "members"]) => {
            let projects = strs("projects");
            let changes = strs("images")
                .into_iter()
                .flat_map(|image| projects.iter().map(move |p| (image.clone(), p.clone(), None)))
                .collect();
            drop(all);
            Some(job(changes))
        }
        _ => None,
    }
}
