//! The AWS EC2 stand-in (see the parent module).

use super::*;

pub(super) fn aws_error(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"),
    )
        .into_response()
}

fn xml_ok(action: &str, inner: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/xml;charset=UTF-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-1</requestId>{inner}</{action}Response>"),
    )
        .into_response()
}

/// An STS answer (query protocol: `<{Action}Result>` in `<{Action}Response>`), or its error.
fn sts_answer(
    action: &str,
    r: Result<super::sts::Session, super::sts::Refusal>,
    p: &BTreeMap<String, String>,
) -> Response {
    let s = match r {
        Ok(s) => s,
        Err((code, msg)) => {
            let status = if code == "AccessDenied" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            return (
                status,
                format!("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>", esc(&msg)),
            )
                .into_response();
        }
    };
    let session = p.get("RoleSessionName").cloned().unwrap_or_default();
    let name = s.role.rsplit('/').next().unwrap_or("");
    let extra = if action == "AssumeRoleWithWebIdentity" {
        "<SubjectFromWebIdentityToken>system:serviceaccount:x:y</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience><Provider>oidc</Provider>"
    } else {
        ""
    };
    (
        StatusCode::OK,
        [("content-type", "text/xml")],
        format!(
            "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>{extra}<AssumedRoleUser><AssumedRoleId>AROATEST:{}</AssumedRoleId><Arn>arn:aws:sts::{}:assumed-role/{name}/{}</Arn></AssumedRoleUser><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials></{action}Result><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></{action}Response>",
            esc(&session),
            s.account,
            esc(&session),
            s.ak,
            esc(&s.sk),
            s.token,
            created_text(s.expires_unix, "%Y-%m-%dT%H:%M:%SZ"),
        ),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Who owns an image: `extra.ownerId`, else the first account.
fn owner(i: &Img) -> &str {
    i.extra.get("ownerId").and_then(Value::as_str).unwrap_or(AWS_ACCOUNT)
}

fn aws_image(i: &Img) -> String {
    let tags: String = i
        .tags
        .iter()
        .map(|(k, v)| format!("<item><key>{}</key><value>{}</value></item>", esc(k), esc(v)))
        .collect();
    let bdm: String = i
        .snapshots
        .iter()
        .map(|s| format!("<item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>{s}</snapshotId><volumeSize>{}</volumeSize><encrypted>{}</encrypted></ebs></item>", i.size_gib, i.encrypted))
        .collect();
    format!(
        "<item><imageId>{}</imageId><name>{}</name><description>{}</description><imageState>{}</imageState><isPublic>{}</isPublic><creationDate>{}</creationDate><blockDeviceMapping>{bdm}</blockDeviceMapping><tagSet>{tags}</tagSet></item>",
        i.id,
        esc(&i.name),
        esc(&i.description),
        if i.failed() {
            "failed"
        } else if i.ready() {
            "available"
        } else {
            "pending"
        },
        i.extra.get("isPublic").and_then(Value::as_bool).unwrap_or(false),
        created_text(i.created_unix, "%Y-%m-%dT%H:%M:%S.000Z"),
    )
}

pub(super) async fn aws(st: &State, p: &BTreeMap<String, String>, hdr: &BTreeMap<String, String>) -> Response {
    let region = hdr
        .get("authorization")
        .and_then(|a| auth_field(a, "Credential"))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("")
        .to_string();
    let list = |prefix: &str| -> Vec<String> {
        (1..=20)
            .filter_map(|n| p.get(&format!("{prefix}.{n}")).cloned())
            .collect()
    };
    // The caller's account, by its access key; an image's owner (`extra.ownerId`, else the
    // first account); what the caller may see and launch: its own, and what is shared with it.
    let caller_ak = hdr
        .get("authorization")
        .and_then(|a| auth_field(a, "Credential"))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string();
    let session_account = st.sts.lock().unwrap().session(&caller_ak).map(|s| s.account.clone());
    let caller: &str = match (caller_ak.as_str(), &session_account) {
        (_, Some(a)) => a.as_str(),
        (AK2, None) => AWS_OTHER_ACCOUNT,
        _ => AWS_ACCOUNT,
    };
    let launchable = |i: &Img| {
        owner(i) == caller
            || st
                .members
                .lock()
                .unwrap()
                .get(&i.id)
                .is_some_and(|l| l.iter().any(|(a, _)| a == caller))
    };
    let owned = |id: &str| {
        st.images
            .lock()
            .unwrap()
            .iter()
            .any(|i| i.id == id && owner(i) == caller)
    };
    match p.get("Action").map(String::as_str).unwrap_or("") {
        "AssumeRoleWithWebIdentity" => {
            let (role, token) = (
                p.get("RoleArn").cloned().unwrap_or_default(),
                p.get("WebIdentityToken").cloned().unwrap_or_default(),
            );
            let r = st.sts.lock().unwrap().web_identity(&role, &token);
            sts_answer("AssumeRoleWithWebIdentity", r, p)
        }
        "AssumeRole" => {
            let role = p.get("RoleArn").cloned().unwrap_or_default();
            let r = st
                .sts
                .lock()
                .unwrap()
                .assume(caller, &role, p.get("ExternalId").map(String::as_str));
            sts_answer("AssumeRole", r, p)
        }
        "DescribeImages" => {
            let ids = list("ImageId");
            let mut filters: Vec<(String, String)> = Vec::new();
            for n in 1..=10 {
                if let (Some(name), Some(v)) = (
                    p.get(&format!("Filter.{n}.Name")),
                    p.get(&format!("Filter.{n}.Value.1")),
                ) {
                    filters.push((name.clone(), v.clone()));
                }
            }
            let imgs: Vec<Img> = st.images.lock().unwrap().clone();
            let own_only = p.get("Owner.1").map(String::as_str) == Some("self");
            let found: Vec<&Img> = imgs
                .iter()
                .filter(|i| i.region == region && i.listed() && launchable(i) && (!own_only || owner(i) == caller))
                .collect();
            for id in &ids {
                if !found.iter().any(|i| i.id == *id) {
                    return aws_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidAMIID.NotFound",
                        &format!("The image id '[{id}]' does not exist"),
                    );
                }
            }
            let items: String = found
                .iter()
                .filter(|i| ids.is_empty() || ids.contains(&i.id))
                .filter(|i| {
                    filters.iter().all(|(n, v)| match n.strip_prefix("tag:") {
                        Some(k) => i.tags.get(k) == Some(v),
                        // EC2 filter values take `*` and `?` wildcards.
                        None if n == "name" => wildcard(v, &i.name),
                        None => true,
                    })
                })
                .map(|i| aws_image(i))
                .collect();
            xml_ok("DescribeImages", format!("<imagesSet>{items}</imagesSet>"))
        }
        "CopyImage" => {
            let (Some(src_id), Some(src_region), Some(name)) =
                (p.get("SourceImageId"), p.get("SourceRegion"), p.get("Name"))
            else {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "MissingParameter",
                    "SourceImageId, SourceRegion and Name are required",
                );
            };
            if let Some(t) = p.get("ClientToken")
                && let Some(id) = st.client_tokens.lock().unwrap().get(t).cloned()
            {
                return xml_ok("CopyImage", format!("<imageId>{id}</imageId>"));
            }
            let src = st
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == *src_id && i.region == *src_region)
                .cloned();
            let Some(src) = src.filter(|i| launchable(i)) else {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidAMIID.NotFound",
                    &format!("The image id '[{src_id}]' does not exist"),
                );
            };
            // Another account's AMI: its snapshots must let the caller create volumes.
            if owner(&src) != caller {
                let m = st.members.lock().unwrap();
                let readable = src
                    .snapshots
                    .iter()
                    .all(|s| m.get(s).is_some_and(|l| l.iter().any(|(a, _)| a == caller)));
                if !readable {
                    return aws_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequest",
                        "You do not have permission to access the storage of this ami",
                    );
                }
            }
            let mut tags = BTreeMap::new();
            if p.get("TagSpecification.1.ResourceType").map(String::as_str) == Some("image") {
                for n in 1..=20 {
                    if let Some(k) = p.get(&format!("TagSpecification.1.Tag.{n}.Key")) {
                        tags.insert(
                            k.clone(),
                            p.get(&format!("TagSpecification.1.Tag.{n}.Value"))
                                .cloned()
                                .unwrap_or_default(),
                        );
                    }
                }
            }
            let id = format!("ami-0{:016x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0xabc000);
            let snap = format!("snap-0{:016x}", st.seq.fetch_add(1, Ordering::SeqCst) + 0xabc000);
            st.images.lock().unwrap().push(Img {
                id: id.clone(),
                region: region.clone(),
                project: region.clone(),
                name: name.clone(),
                description: p.get("Description").cloned().unwrap_or_default(),
                size_gib: src.size_gib,
                extra: json!({"ownerId": caller}),
                tags,
                copy: Some((Instant::now(), copy_time(st, &region))),
                encrypted: p.get("Encrypted").map(String::as_str) == Some("true"),
                snapshots: vec![snap],
                created_unix: now_unix(),
                listed_at: st.listed_at(),
                fails: st.copy_fails(),
            });
            if let Some(t) = p.get("ClientToken") {
                st.client_tokens.lock().unwrap().insert(t.clone(), id.clone());
            }
            hold(st).await;
            xml_ok("CopyImage", format!("<imageId>{id}</imageId>"))
        }
        "CreateTags" => {
            let ids = list("ResourceId");
            let mut imgs = st.images.lock().unwrap();
            for id in &ids {
                let Some(i) = imgs.iter_mut().find(|i| i.id == *id && i.region == region) else {
                    return aws_error(StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound", "not found");
                };
                for n in 1..=20 {
                    if let Some(k) = p.get(&format!("Tag.{n}.Key")) {
                        i.tags
                            .insert(k.clone(), p.get(&format!("Tag.{n}.Value")).cloned().unwrap_or_default());
                    }
                }
            }
            xml_ok("CreateTags", "<return>true</return>".into())
        }
        "DeregisterImage" => {
            if p.get("ImageId").is_some_and(|id| !owned(id)) {
                return aws_error(StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound", "not found");
            }
            let mut imgs = st.images.lock().unwrap();
            let before = imgs.len();
            imgs.retain(|i| !(Some(&i.id) == p.get("ImageId") && i.region == region));
            if imgs.len() == before {
                aws_error(StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound", "not found")
            } else {
                xml_ok("DeregisterImage", "<return>true</return>".into())
            }
        }
        "DeleteSnapshot" => xml_ok("DeleteSnapshot", "<return>true</return>".into()),
        // Launch permissions are kept per AMI id, createVolumePermission per snapshot id.
        "DescribeImageAttribute" | "DescribeSnapshotAttribute" => {
            let image = p.get("Action").map(String::as_str) == Some("DescribeImageAttribute");
            let (id_key, attr, list_el) = if image {
                ("ImageId", "launchPermission", "launchPermission")
            } else {
                ("SnapshotId", "createVolumePermission", "createVolumePermission")
            };
            if p.get("Attribute").map(String::as_str) != Some(attr) {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    "unsupported attribute",
                );
            }
            let id = p.get(id_key).cloned().unwrap_or_default();
            let items: String = st
                .listed_members(&id)
                .iter()
                .map(|a| format!("<item><userId>{a}</userId></item>"))
                .collect();
            let id_el = if image { "imageId" } else { "snapshotId" };
            xml_ok(
                p["Action"].as_str(),
                format!("<{id_el}>{id}</{id_el}><{list_el}>{items}</{list_el}>"),
            )
        }
        "ModifyImageAttribute" | "ModifySnapshotAttribute" => {
            let image = p.get("Action").map(String::as_str) == Some("ModifyImageAttribute");
            if image && p.get("ImageId").is_some_and(|id| !owned(id)) {
                return aws_error(StatusCode::FORBIDDEN, "AuthFailure", "Not authorized for image");
            }
            let (id, add, remove) = if image {
                (
                    p.get("ImageId").cloned().unwrap_or_default(),
                    (1..=20)
                        .filter_map(|n| p.get(&format!("LaunchPermission.Add.{n}.UserId")).cloned())
                        .collect::<Vec<_>>(),
                    (1..=20)
                        .filter_map(|n| p.get(&format!("LaunchPermission.Remove.{n}.UserId")).cloned())
                        .collect::<Vec<_>>(),
                )
            } else {
                let users = list("UserId");
                match p.get("OperationType").map(String::as_str) {
                    Some("add") => (p.get("SnapshotId").cloned().unwrap_or_default(), users, vec![]),
                    Some("remove") => (p.get("SnapshotId").cloned().unwrap_or_default(), vec![], users),
                    _ => return aws_error(StatusCode::BAD_REQUEST, "InvalidParameterValue", "OperationType"),
                }
            };
            let mut all = st.members.lock().unwrap();
            let l = all.entry(id.clone()).or_default();
            for a in add {
                if !l.iter().any(|(m, _)| *m == a) {
                    st.member_changed(&id, &a, false);
                    l.push((a, "shared".into()));
                }
            }
            for a in remove.iter().filter(|a| l.iter().any(|(m, _)| m == *a)) {
                st.member_changed(&id, a, true);
            }
            l.retain(|(m, _)| !remove.contains(m));
            xml_ok(p["Action"].as_str(), "<return>true</return>".into())
        }
        other => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("The action {other} is not valid for this web service."),
        ),
    }
}
