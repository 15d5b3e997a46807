//! The Google Compute Engine stand-in (see the parent module): `compute/v1` images (get, list
//! with `filter` and `pageToken`, insert with `requestId`, delete), their IAM policies (with
//! `etag`: a stale one is `412 conditionNotMet`), and the OAuth2 token endpoint, which takes a
//! service account's RS256 assertion (its signature checked with the test key's public key).
//! An image's region is its storage location; an insert answers with a running operation and
//! the image is `PENDING` until its copy time is up (then `READY`, or `FAILED`). An image's
//! `family` and `deprecated` come from its `extra` fields; `images.getFromFamily` answers with the
//! family's newest image not deprecated; `images.deprecate` sets an image's `deprecated`.

use super::*;

/// The test service account's RSA key (test-only, generated for these tests).
pub const TEST_KEY: &str = include_str!("google_test_key.pem");
pub const GOOGLE_PROJECT: &str = "golden-images";
pub const GOOGLE_ACCOUNT: &str = "copier@golden-images.iam.gserviceaccount.com";
/// The role a share grants.
const IMAGE_USER: &str = "roles/compute.imageUser";

/// Another team's project and its copier (a copy owned by it: `destinations[].account`).
pub const TEAM_PROJECT: &str = "team-b";
pub const TEAM_ACCOUNT: &str = "copier@team-b.iam.gserviceaccount.com";

/// The JSON key file of the test service account, its token endpoint this stand-in.
pub fn key_file(url: &str) -> String {
    key_file_of(url, GOOGLE_ACCOUNT, GOOGLE_PROJECT)
}

/// The key file of `account` in `project` (the same test key).
pub fn key_file_of(url: &str, account: &str, project: &str) -> String {
    json!({
        "type": "service_account", "project_id": project, "private_key_id": "k1",
        "private_key": TEST_KEY, "client_email": account, "client_id": "1",
        "token_uri": format!("{url}/token"),
    })
    .to_string()
}

/// The project whose service account holds the request's bearer token (the team's tokens say
/// so in their text; every other token is our project's).
fn caller_project(hdr: &BTreeMap<String, String>) -> &'static str {
    let token = hdr.get("authorization").map(String::as_str).unwrap_or("");
    if token.starts_with(&format!("Bearer ya29.{TEAM_PROJECT}-")) {
        TEAM_PROJECT
    } else {
        GOOGLE_PROJECT
    }
}

/// An image's id in the stand-in: its resource name, as the operator reports it.
pub fn resource(name: &str) -> String {
    format!("projects/{GOOGLE_PROJECT}/global/images/{name}")
}

/// A Compute Engine error answer.
pub(super) fn g_err(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"domain": "global", "reason": reason, "message": message}]}});
    (status, axum::Json(body)).into_response()
}

fn image_json(base: &str, i: &Img) -> Value {
    let status = if i.failed() {
        "FAILED"
    } else if i.ready() {
        "READY"
    } else {
        "PENDING"
    };
    let mut v = json!({
        "kind": "compute#image", "id": i.created_unix.to_string() + &i.name.len().to_string(),
        "creationTimestamp": created_text(i.created_unix, "%Y-%m-%dT%H:%M:%S%.3f-00:00"),
        "name": i.name, "description": i.description, "sourceType": "RAW", "status": status,
        "archiveSizeBytes": (i.size_gib << 28).to_string(), "diskSizeGb": i.size_gib.to_string(),
        "storageLocations": [i.region], "labels": i.tags, "labelFingerprint": "42WmSpB8rSM=",
        "selfLink": format!("{base}/images/{}", i.name),
    });
    for (k, x) in i.extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    v
}

fn operation(base: &str, kind: &str, target: &str, n: u32) -> Response {
    axum::Json(operation_json(base, kind, target, n)).into_response()
}

fn operation_json(base: &str, kind: &str, target: &str, n: u32) -> Value {
    json!({
        "kind": "compute#operation", "id": format!("{}", 7_000_000 + n), "name": format!("operation-{n}-{kind}"),
        "operationType": kind, "targetLink": format!("{base}/images/{target}"), "status": "RUNNING",
        "progress": 0, "insertTime": created_text(now_unix(), "%Y-%m-%dT%H:%M:%S%.3f-00:00"),
        "selfLink": format!("{base}/operations/operation-{n}-{kind}"),
    })
}

/// A recorded request's method name (`images.insert`).
pub fn method_name(r: &Req) -> String {
    method_of(&r.method, &r.path)
}

/// A public image project (as `debian-cloud`): its images are readable by every caller.
pub const PUBLIC_PROJECT: &str = "debian-cloud";

/// Add an image of the public image project (`extra` as for [`Stand::add`]); its id.
pub fn add_public(cloud: &Stand, region: &str, name: &str, extra: Value) -> String {
    let id = cloud.add(region, name, 10, extra);
    let public = format!("projects/{PUBLIC_PROJECT}/global/images/{name}");
    for i in cloud.state.images.lock().unwrap().iter_mut().filter(|i| i.id == id) {
        i.id = public.clone();
    }
    public
}

/// Whether image `i` is one of `project`'s.
fn in_project(i: &Img, project: &str) -> bool {
    i.id.starts_with(&format!("projects/{project}/global/images/"))
}

/// The last path segment of a link or resource name (an image's name).
fn last_segment(link: &Value) -> String {
    link.as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string()
}

/// Locations the project's organization policy (`constraints/gcp.resourceLocations`) denies:
/// an insert there is accepted, and its operation ends with the policy's error, no image made.
pub const DENIED_LOCATIONS: &[&str] = &["me-central2"];

/// `globalOperations.get`: an insert's operation is `DONE` once its image is READY or FAILED
/// (or at once, with its error, when it was refused); `RUNNING` before.
fn get_operation(st: &State, name: &str) -> Response {
    let Some(mut op) = st.operations.lock().unwrap().get(name).cloned() else {
        return g_err(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{GOOGLE_PROJECT}/global/operations/{name}' was not found"),
        );
    };
    if op["status"] != "DONE" {
        let target = last_segment(&op["targetLink"]);
        let done = st
            .images
            .lock()
            .unwrap()
            .iter()
            .any(|i| i.name == target && (i.ready() || i.failed()));
        if done {
            op["status"] = json!("DONE");
            op["progress"] = json!(100);
        }
    }
    axum::Json(op).into_response()
}

/// The method id (discovery's) of a request, for the call budget: `images.insert`, `token`.
pub(super) fn method_of(method: &str, path: &str) -> String {
    if path == "/token" {
        return "token".into();
    }
    if path == "/v1/token" {
        return "sts.token".into();
    }
    if path.ends_with(":generateAccessToken") {
        return "iamcredentials.generateAccessToken".into();
    }
    let rest = path.split("/global/").nth(1).unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["images"]) => "images.list",
        ("POST", ["images"]) => "images.insert",
        ("GET", ["images", _]) => "images.get",
        ("GET", ["images", "family", _]) => "images.getFromFamily",
        ("GET", ["operations", _]) => "globalOperations.get",
        ("DELETE", ["images", _]) => "images.delete",
        ("GET", ["images", _, "getIamPolicy"]) => "images.getIamPolicy",
        ("POST", ["images", _, "setIamPolicy"]) => "images.setIamPolicy",
        ("POST", ["images", _, "deprecate"]) => "images.deprecate",
        _ => "unknown",
    }
    .into()
}

/// The token endpoint: a JWT-bearer assertion signed with the test key, for this endpoint.
pub(super) fn token(st: &State, url_of_token: &str, form: &BTreeMap<String, String>) -> Response {
    let bad = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return bad("unsupported grant_type");
    }
    let jwt = form.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return bad("Invalid JWT");
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let der = image_replication_operator::image_replication::vm::providers::google::oauth::pem_body(TEST_KEY).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public().as_ref().to_vec(),
    );
    let sig = b64.decode(parts[2]).unwrap_or_default();
    if public
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .is_err()
    {
        return bad("Invalid JWT Signature.");
    }
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or(Value::Null);
    let now = now_unix();
    if (claims["iss"] != GOOGLE_ACCOUNT && claims["iss"] != TEAM_ACCOUNT)
        || claims["aud"] != url_of_token
        || claims["scope"].as_str().is_none_or(|s| !s.contains("cloud-platform"))
    {
        return bad("Invalid JWT: iss, aud or scope");
    }
    if claims["exp"].as_i64().is_none_or(|e| e <= now || e - now > 3600)
        || claims["iat"].as_i64().is_none_or(|i| i > now + 60)
    {
        return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let life = st.sts.lock().unwrap().life;
    let who = if claims["iss"] == TEAM_ACCOUNT {
        TEAM_PROJECT
    } else {
        "test"
    };
    let token = format!("ya29.{who}-{}", st.seq.fetch_add(1, Ordering::SeqCst));
    st.hand_out(&token, Instant::now() + life);
    axum::Json(json!({"access_token": token, "expires_in": life.as_secs(), "token_type": "Bearer"})).into_response()
}

/// A bearer token this endpoint handed out and that has not expired; else the 401 to answer.
pub(super) fn check_token(st: &State, hdr: &BTreeMap<String, String>) -> Option<Response> {
    st.bearer(hdr).err().map(|_| {
        g_err(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        )
    })
}

pub(super) async fn google(
    st: &State,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    b: &Value,
    hdr: &BTreeMap<String, String>,
) -> Response {
    let base = path.split("/global/").next().unwrap_or("").to_string() + "/global";
    let project = base
        .trim_start_matches("/compute/v1/projects/")
        .trim_end_matches("/global")
        .to_string();
    // Our project; a public image project is readable by anyone, writable by no one.
    let caller = caller_project(hdr);
    let project_ok = project == caller || (project == PUBLIC_PROJECT && method == Method::GET);
    if !project_ok {
        return g_err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Required 'compute.images.get' permission for the project",
        );
    }
    let rest = path.split("/global/").nth(1).unwrap_or("").to_string();
    let parts: Vec<&str> = rest.split('/').collect();
    let image_id = |name: &str| format!("projects/{project}/global/images/{name}");
    let find = |name: &str| {
        let id = image_id(name);
        st.images
            .lock()
            .unwrap()
            .iter()
            .find(|i| i.id == id && i.listed())
            .cloned()
    };
    let not_found = |name: &str| {
        g_err(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{GOOGLE_PROJECT}/global/images/{name}' was not found"),
        )
    };
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["images"]) => list(st, &base, &project, q),
        ("GET", ["images", name]) => match find(name) {
            Some(i) => axum::Json(image_json(&base, &i)).into_response(),
            None => not_found(name),
        },
        ("POST", ["images"]) => insert(st, &base, &project, q, b).await,
        ("GET", ["images", "family", family]) => from_family(st, &base, &project, family),
        ("GET", ["operations", name]) => get_operation(st, name),
        ("DELETE", ["images", name]) => {
            let mut imgs = st.images.lock().unwrap();
            let Some(pos) = imgs.iter().position(|i| i.id == image_id(name)) else {
                drop(imgs);
                return not_found(name);
            };
            imgs.remove(pos);
            drop(imgs);
            st.members.lock().unwrap().remove(&image_id(name));
            operation(&base, "delete", name, st.seq.fetch_add(1, Ordering::SeqCst))
        }
        ("GET", ["images", name, "getIamPolicy"]) => match find(name) {
            Some(_) => axum::Json(policy(st, &image_id(name))).into_response(),
            None => not_found(name),
        },
        ("POST", ["images", name, "setIamPolicy"]) => {
            if find(name).is_none() {
                return not_found(name);
            }
            let now = policy(st, &image_id(name));
            let p = &b["policy"];
            if p["etag"] != now["etag"] {
                return g_err(
                    StatusCode::PRECONDITION_FAILED,
                    "conditionNotMet",
                    "Precondition Failed",
                );
            }
            let members: Vec<(String, String)> = p["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["role"] == IMAGE_USER)
                .flat_map(|x| x["members"].as_array().cloned().unwrap_or_default())
                .filter_map(|m| m.as_str().map(|a| (a.to_string(), "shared".to_string())))
                .collect();
            st.members.lock().unwrap().insert(image_id(name), members);
            *st.policy_versions.lock().unwrap().entry(image_id(name)).or_default() += 1;
            axum::Json(policy(st, &image_id(name))).into_response()
        }
        ("POST", ["images", name, "deprecate"]) => {
            let mut imgs = st.images.lock().unwrap();
            let Some(i) = imgs.iter_mut().find(|i| i.id == image_id(name)) else {
                drop(imgs);
                return not_found(name);
            };
            if !i.extra.is_object() {
                i.extra = json!({});
            }
            i.extra["deprecated"] = b.clone();
            drop(imgs);
            operation(
                &base,
                "setDeprecationStatus",
                name,
                st.seq.fetch_add(1, Ordering::SeqCst),
            )
        }
        _ => g_err(StatusCode::NOT_FOUND, "notFound", "no such method"),
    }
}

/// The image's IAM policy as `getIamPolicy` answers it.
fn policy(st: &State, id: &str) -> Value {
    let v = st.policy_versions.lock().unwrap().get(id).copied().unwrap_or(0);
    let name = id.rsplit('/').next().unwrap_or(id);
    use base64::Engine as _;
    let etag = base64::engine::general_purpose::STANDARD.encode(format!("etag-{name}-{v}"));
    let members: Vec<String> = st
        .members
        .lock()
        .unwrap()
        .get(id)
        .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
        .unwrap_or_default();
    if members.is_empty() {
        return json!({"version": 1, "etag": etag});
    }
    json!({"version": 1, "etag": etag, "bindings": [{"role": IMAGE_USER, "members": members}]})
}

/// `images.list`: creation order, `maxResults` (default and most 500), `pageToken`, and the
/// `labels.KEY=VALUE` and `name eq RE` filters.
/// `images.getFromFamily`: the family's newest image (by creation) that is not deprecated,
/// whatever its status; `404` when it has none.
fn from_family(st: &State, base: &str, project: &str, family: &str) -> Response {
    let newest = st
        .images
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.listed() && i.extra["family"] == family && in_project(i, project))
        .filter(|i| i.extra.pointer("/deprecated/state").is_none_or(|s| s == "ACTIVE"))
        .max_by_key(|i| i.created_unix)
        .cloned();
    match newest {
        Some(i) => axum::Json(image_json(base, &i)).into_response(),
        None => g_err(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{GOOGLE_PROJECT}/global/images/family/{family}' was not found"),
        ),
    }
}

fn list(st: &State, base: &str, project: &str, q: &BTreeMap<String, String>) -> Response {
    let size: usize = q
        .get("maxResults")
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
        .clamp(1, 500);
    let from: usize = q.get("pageToken").and_then(|n| n.parse().ok()).unwrap_or(0);
    let filter = q.get("filter").cloned().unwrap_or_default();
    let name_re = filter
        .strip_prefix("name eq ")
        .map(|re| regex::Regex::new(&format!("^(?:{re})$")).expect("an RE2 name filter"));
    let keep = |i: &Img| match (filter.strip_prefix("labels.").and_then(|f| f.split_once('=')), &name_re) {
        (Some((k, v)), _) => i.tags.get(k).map(String::as_str) == Some(v),
        (None, Some(re)) => re.is_match(&i.name),
        (None, None) => filter.is_empty(),
    };
    let mut all: Vec<Img> = st
        .images
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.listed() && in_project(i, project) && keep(i))
        .cloned()
        .collect();
    all.sort_by_key(|i| i.created_unix);
    let page: Vec<Value> = all.iter().skip(from).take(size).map(|i| image_json(base, i)).collect();
    let mut v = json!({"kind": "compute#imageList", "id": format!("projects/{GOOGLE_PROJECT}/global/images"), "selfLink": format!("{base}/images")});
    if !page.is_empty() {
        v["items"] = json!(page);
    }
    if from + size < all.len() {
        v["nextPageToken"] = json!((from + size).to_string());
    }
    axum::Json(v).into_response()
}

async fn insert(st: &State, base: &str, project: &str, q: &BTreeMap<String, String>, b: &Value) -> Response {
    let request = q.get("requestId").cloned().unwrap_or_default();
    // The same requestId: the same operation.
    if let Some(op) = st.client_tokens.lock().unwrap().get(&request).cloned() {
        return get_operation(st, &op);
    }
    let name = b["name"].as_str().unwrap_or("").to_string();
    let source = last_segment(&b["sourceImage"]);
    // The source's resource name: in the project its URL names, else in ours.
    let link = b["sourceImage"].as_str().unwrap_or("");
    let source_id = match link.find("projects/") {
        Some(i) => link[i..].to_string(),
        None => format!("projects/{project}/global/images/{source}"),
    };
    let region = b["storageLocations"][0].as_str().unwrap_or("").to_string();
    if name.is_empty() || region.is_empty() {
        return g_err(
            StatusCode::BAD_REQUEST,
            "required",
            "Required field 'resource.name' not specified",
        );
    }
    let src = st
        .images
        .lock()
        .unwrap()
        .iter()
        .find(|i| i.id == source_id && i.listed())
        .cloned();
    let Some(src) = src else {
        return g_err(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource '{source_id}' was not found"),
        );
    };
    // Another project's image (not a public image project's): its IAM policy must let the
    // caller's project use it (roles/compute.imageUser for its copier).
    let owner = source_id
        .trim_start_matches("projects/")
        .split('/')
        .next()
        .unwrap_or("");
    if owner != project && owner != PUBLIC_PROJECT {
        let shared = st.members.lock().unwrap().get(&source_id).cloned().unwrap_or_default();
        if !shared
            .iter()
            .any(|(a, _)| *a == format!("serviceAccount:{TEAM_ACCOUNT}"))
        {
            return g_err(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("Required 'compute.images.useReadOnly' permission for '{source_id}'"),
            );
        }
    }
    if st
        .images
        .lock()
        .unwrap()
        .iter()
        .any(|i| i.name == name && in_project(i, project))
    {
        return g_err(
            StatusCode::CONFLICT,
            "alreadyExists",
            &format!("The resource 'projects/{project}/global/images/{name}' already exists"),
        );
    }
    let n = st.seq.fetch_add(1, Ordering::SeqCst);
    let mut op = operation_json(base, "insert", &name, n);
    let op_name = op["name"].as_str().unwrap_or("").to_string();
    if DENIED_LOCATIONS.contains(&region.as_str()) {
        op["status"] = json!("DONE");
        op["progress"] = json!(100);
        op["httpErrorStatusCode"] = json!(412);
        op["httpErrorMessage"] = json!("PRECONDITION FAILED");
        op["error"] = json!({"errors": [{"code": "CONDITION_NOT_MET", "message": format!(
            "Location {} violates constraint constraints/gcp.resourceLocations on the resource projects/{project}/global/images/{name}.",
            region.to_uppercase())}]});
        st.operations.lock().unwrap().insert(op_name.clone(), op.clone());
        if !request.is_empty() {
            st.client_tokens.lock().unwrap().insert(request, op_name);
        }
        return axum::Json(op).into_response();
    }
    let tags: BTreeMap<String, String> = b["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    st.images.lock().unwrap().push(Img {
        id: format!("projects/{project}/global/images/{name}"),
        region: region.clone(),
        project: project.into(),
        name: name.clone(),
        description: b["description"].as_str().unwrap_or("").into(),
        size_gib: src.size_gib,
        extra: json!({"sourceImage": format!("https://www.googleapis.com/compute/v1/{source_id}")}),
        tags,
        copy: Some((Instant::now(), copy_time(st, &region))),
        encrypted: b.get("imageEncryptionKey").is_some(),
        snapshots: Vec::new(),
        created_unix: now_unix(),
        listed_at: st.listed_at(),
        fails: st.copy_fails(),
    });
    st.operations.lock().unwrap().insert(op_name.clone(), op.clone());
    if !request.is_empty() {
        st.client_tokens.lock().unwrap().insert(request, op_name);
    }
    hold(st).await;
    axum::Json(op).into_response()
}

/// Google's STS (`POST /v1/token`, RFC 8693): a web identity token of the trusted issuer and
/// audience, for a trusted pool provider (`audience`), exchanged for a federated access token.
pub(super) fn sts_exchange(st: &State, form: &BTreeMap<String, String>) -> Response {
    let bad = |code: &str, why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": code, "error_description": why})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return bad("unsupported_grant_type", "grant_type");
    }
    let provider = form.get("audience").cloned().unwrap_or_default();
    let jwt = form.get("subject_token").cloned().unwrap_or_default();
    let r = st.sts.lock().unwrap().web_identity(&provider, &jwt);
    match r {
        Err((_, msg)) => bad("invalid_grant", &msg),
        Ok(x) => {
            st.hand_out(&x.ak, x.expires);
            let life = x.expires_unix - now_unix();
            axum::Json(
                json!({"access_token": x.ak, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer", "expires_in": life}),
            )
            .into_response()
        }
    }
}

/// IAM Credentials `generateAccessToken`: the caller (a handed-out token's account, or the
/// test service account's project for a key's token) impersonates a trusted service account.
pub(super) fn generate(st: &State, path: &str, hdr: &BTreeMap<String, String>) -> Response {
    let bearer = hdr
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let sa = path
        .split("serviceAccounts/")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(":generateAccessToken")
        .to_string();
    let mut sts = st.sts.lock().unwrap();
    let caller = sts
        .session(bearer)
        .map(|x| x.account.clone())
        .unwrap_or_else(|| GOOGLE_PROJECT.to_string());
    match sts.assume(&caller, &sa, None) {
        Err(_) => {
            let msg = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
            let body = json!({"error": {"code": 403, "message": msg, "status": "PERMISSION_DENIED"}});
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
        }
        Ok(x) => {
            st.hand_out(&x.ak, x.expires);
            axum::Json(json!({"accessToken": x.ak, "expireTime": created_text(x.expires_unix, "%Y-%m-%dT%H:%M:%SZ")}))
                .into_response()
        }
    }
}
