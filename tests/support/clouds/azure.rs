//! The Azure Compute Gallery stand-in (see the parent module): gallery image versions of one
//! subscription and resource group (get with `$expand=ReplicationStatus`, list by image
//! definition with `nextLink` pages, update of `publishingProfile.targetRegions`), and Entra ID's
//! client-credentials token endpoint. A version's replica in another region is an [`Img`] with
//! the version's id and that region: added when an update names the region (`Replicating` with
//! progress until its copy time is up, then `Completed`, or `Failed`), removed when an update
//! leaves it out. Regions are written as ARM writes them (`West Europe`).
//!
//! Shares are Azure RBAC role assignments (`Microsoft.Authorization`, api-version 2022-04-01) at
//! a version's scope: created by name (the same name again updates it; the same principal, role
//! and scope under another name is `409 RoleAssignmentExists`), deleted by id (`204` when absent),
//! listed with `$filter=atScope()` — which lists the assignments above the scope too (a Reader on
//! the subscription, [`INHERITED_READER`]). A principal whose object id starts with `ffffffff` does
//! not exist (`400 PrincipalNotFound`). Who holds an assignment is kept in the shared member list,
//! so the list lags behind changes under the profile's member lag.

use super::*;

pub const SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000001";
pub const RESOURCE_GROUP: &str = "images";
pub const TENANT: &str = "11111111-0000-4000-8000-000000000001";
pub const CLIENT: &str = "22222222-0000-4000-8000-000000000001";
pub const CLIENT_SECRET: &str = "azure~test~secret";
/// Versions a list page holds.
const PAGE: usize = 50;
/// Role assignments a list page holds.
const ROLE_PAGE: usize = 20;
/// The built-in Reader role.
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
/// A group with Reader on the whole subscription: listed at every scope below it, a share of no one.
pub const INHERITED_READER: &str = "5e5e5e5e-0000-4000-8000-000000000001";
const ROLES: &str = "/providers/Microsoft.Authorization/roleAssignments";

/// The id of version `name` (`x.y.z`, of definition `golden`; any other name is a definition
/// of its own with version 1.0.0).
pub fn version_id(name: &str) -> String {
    let (definition, version) = if name.split('.').count() == 3 && name.split('.').all(|p| p.parse::<u32>().is_ok()) {
        ("golden", name.to_string())
    } else {
        (name, "1.0.0".to_string())
    };
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/galleries/gallery1/images/{definition}/versions/{version}"
    )
}

/// A region as ARM writes it.
fn display(region: &str) -> String {
    match region {
        "eastus" => "East US".into(),
        "westeurope" => "West Europe".into(),
        "southeastasia" => "Southeast Asia".into(),
        r => r.into(),
    }
}

fn norm(r: &str) -> String {
    r.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// An ARM error answer.
pub(super) fn az_err(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// The operation id of a request (its SDK name), for the call budget.
pub(super) fn method_of(method: &str, path: &str) -> String {
    if path.ends_with("/oauth2/v2.0/token") {
        return "token".into();
    }
    if let Some((_, rest)) = path.split_once(ROLES) {
        return match (method, rest.is_empty()) {
            ("GET", true) => "RoleAssignments_ListForScope",
            ("PUT", false) => "RoleAssignments_Create",
            ("DELETE", false) => "RoleAssignments_Delete",
            _ => "unknown",
        }
        .into();
    }
    let versions = path.trim_end_matches('/').ends_with("/versions");
    match (method, versions) {
        ("GET", true) => "GalleryImageVersions_ListByGalleryImage",
        ("GET", false) => "GalleryImageVersions_Get",
        ("PATCH", _) => "GalleryImageVersions_Update",
        ("DELETE", _) => "GalleryImageVersions_Delete",
        _ => "unknown",
    }
    .into()
}

/// Entra ID's token endpoint: the client-credentials grant of the test app.
pub(super) fn token(st: &State, path: &str, form: &BTreeMap<String, String>) -> Response {
    let bad = |status: StatusCode, code: &str, why: &str| {
        (
            status,
            axum::Json(json!({"error": code, "error_description": why, "error_codes": [7000215]})),
        )
            .into_response()
    };
    if path != format!("/{TENANT}/oauth2/v2.0/token") {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("https://management.azure.com/.default")
    {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: grant_type or scope",
        );
    }
    let client = form.get("client_id").cloned().unwrap_or_default();
    // Workload identity: the federated token of an app that trusts its issuer and audience.
    let (t, until) = if let Some(jwt) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS50027: client_assertion_type",
            );
        }
        let r = st.sts.lock().unwrap().web_identity(&client, jwt);
        match r {
            Ok(x) => (x.ak, x.expires),
            Err((_, msg)) => {
                let why = format!("AADSTS70021: No matching federated identity record found: {msg}");
                return bad(StatusCode::UNAUTHORIZED, "invalid_client", &why);
            }
        }
    } else {
        if client != CLIENT || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
            return bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            );
        }
        let life = st.sts.lock().unwrap().life;
        (
            format!("eyJ0eXAi.test-{}", st.seq.fetch_add(1, Ordering::SeqCst)),
            Instant::now() + life,
        )
    };
    st.hand_out(&t, until);
    let life = until.saturating_duration_since(Instant::now()).as_secs();
    axum::Json(json!({"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": t}))
        .into_response()
}

/// A handed-out bearer token that has not expired; else ARM's 401.
pub(super) fn check_token(st: &State, hdr: &BTreeMap<String, String>) -> Option<Response> {
    match st.bearer(hdr) {
        Ok(()) => None,
        Err(true) => Some(az_err(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        Err(false) => Some(az_err(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
    }
}

/// The version `id` as ARM answers it, its replication status when `expand`.
fn version_json(st: &State, id: &str, expand: bool) -> Option<Value> {
    let imgs = st.images.lock().unwrap();
    let home = imgs
        .iter()
        .find(|i| i.id == id && i.copy.is_none() && i.listed())?
        .clone();
    let replicas: Vec<&Img> = imgs.iter().filter(|i| i.id == id).collect();
    let regions: Vec<Value> = replicas
        .iter()
        .map(|i| {
            json!({"name": display(&i.region),
                "regionalReplicaCount": i.extra["regionalReplicaCount"].as_i64().unwrap_or(1),
                "storageAccountType": i.extra["storageAccountType"].as_str().unwrap_or("Standard_LRS")})
        })
        .collect();
    let version = id.rsplit('/').next().unwrap_or("");
    let mut v = json!({
        "id": id, "name": version, "type": "Microsoft.Compute/galleries/images/versions",
        "location": display(&home.region), "tags": {},
        "properties": {
            "publishingProfile": {
                "targetRegions": regions, "replicaCount": 1, "excludeFromLatest": false,
                "storageAccountType": "Standard_LRS",
                "publishedDate": created_text(home.created_unix, "%Y-%m-%dT%H:%M:%S%.7f+00:00"),
            },
            "storageProfile": {"osDiskImage": {"sizeInGB": home.size_gib, "hostCaching": "ReadOnly"}},
            "provisioningState": "Succeeded",
        },
    });
    if expand {
        let summary: Vec<Value> = replicas
            .iter()
            .map(|i| {
                let state = if i.failed() {
                    "Failed"
                } else if i.ready() {
                    "Completed"
                } else {
                    "Replicating"
                };
                json!({"region": display(&i.region), "state": state, "details": "", "progress": i.progress()})
            })
            .collect();
        let agg = if summary.iter().any(|s| s["state"] == "Failed") {
            "Failed"
        } else if summary.iter().all(|s| s["state"] == "Completed") {
            "Completed"
        } else {
            "InProgress"
        };
        v["properties"]["replicationStatus"] = json!({"aggregatedState": agg, "summary": summary});
    }
    Some(v)
}

pub(super) async fn azure(
    st: &State,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    b: &Value,
) -> Response {
    if path.contains(ROLES) {
        return role_assignments(st, method, path, q, b);
    }
    if q.get("api-version").map(String::as_str) != Some("2026-03-03") {
        return az_err(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is invalid.",
        );
    }
    if !path.starts_with(&format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/"
    )) {
        return az_err(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The client does not have authorization to perform action.",
        );
    }
    let not_found = || az_err(StatusCode::NOT_FOUND, "ResourceNotFound", "The Resource was not found.");
    if path.trim_end_matches('/').ends_with("/versions") && method == Method::GET {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let from: usize = q.get("$skiptoken").and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut ids: Vec<(i64, String)> = st
            .images
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.id.starts_with(&prefix) && i.copy.is_none() && i.listed())
            .map(|i| (i.created_unix, i.id.clone()))
            .collect();
        ids.sort();
        let page: Vec<Value> = ids
            .iter()
            .skip(from)
            .take(PAGE)
            .filter_map(|(_, id)| version_json(st, id, false))
            .collect();
        let mut v = json!({"value": page});
        if from + PAGE < ids.len() {
            let host = "http://azure.invalid"; // the operator follows the path and query only
            v["nextLink"] = json!(format!(
                "{host}{path}?api-version=2026-03-03&$skiptoken={}",
                from + PAGE
            ));
        }
        return axum::Json(v).into_response();
    }
    match method.as_str() {
        "GET" => match version_json(
            st,
            path,
            q.get("$expand").map(String::as_str) == Some("ReplicationStatus"),
        ) {
            Some(v) => axum::Json(v).into_response(),
            None => not_found(),
        },
        "PATCH" => {
            let Some(_) = version_json(st, path, false) else {
                return not_found();
            };
            let targets: Vec<Value> = b
                .pointer("/properties/publishingProfile/targetRegions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let wanted: Vec<String> = targets.iter().filter_map(|t| t["name"].as_str().map(norm)).collect();
            {
                let mut imgs = st.images.lock().unwrap();
                let home = imgs.iter().find(|i| i.id == path && i.copy.is_none()).cloned().unwrap();
                if !wanted.contains(&norm(&home.region)) {
                    return az_err(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        "The source region must be among the target regions.",
                    );
                }
                imgs.retain(|i| i.id != path || i.copy.is_none() || wanted.contains(&norm(&i.region)));
                for r in &wanted {
                    if !imgs.iter().any(|i| i.id == path && norm(&i.region) == *r) {
                        let region = r.clone();
                        // The region's replica count and storage type, as the update asked.
                        let t = targets
                            .iter()
                            .find(|t| t["name"].as_str().map(norm).as_ref() == Some(r));
                        let mut extra = json!({});
                        for k in ["regionalReplicaCount", "storageAccountType"] {
                            if let Some(x) = t.and_then(|t| t.get(k)).filter(|x| !x.is_null()) {
                                extra[k] = x.clone();
                            }
                        }
                        imgs.push(Img {
                            copy: Some((Instant::now(), copy_time(st, &region))),
                            region,
                            listed_at: None,
                            fails: st.copy_fails(),
                            tags: BTreeMap::new(),
                            extra,
                            ..home.clone()
                        });
                    }
                }
            }
            hold(st).await;
            let v = version_json(st, path, false).unwrap();
            let mut r = axum::Json(v).into_response();
            let op = format!(
                "https://management.azure.com{path}/operations/op-{}",
                st.seq.fetch_add(1, Ordering::SeqCst)
            );
            r.headers_mut().insert("azure-asyncoperation", op.parse().unwrap());
            r
        }
        _ => az_err(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The method is not allowed.",
        ),
    }
}

/// A share account (`group:<id>`) of a principal type and object id.
fn account_of(kind: &str, principal: &str) -> String {
    let prefix = match kind {
        "User" => "user",
        "Group" => "group",
        "ServicePrincipal" => "servicePrincipal",
        k => k,
    };
    format!("{prefix}:{}", principal.to_ascii_lowercase())
}

fn role_text<'a>(a: &'a Value, field: &str) -> &'a str {
    a["properties"][field].as_str().unwrap_or("")
}

/// `Microsoft.Authorization/roleAssignments` at a version's scope: create, delete, list.
fn role_assignments(st: &State, method: &Method, path: &str, q: &BTreeMap<String, String>, b: &Value) -> Response {
    if q.get("api-version").map(String::as_str) != Some("2022-04-01") {
        return az_err(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is invalid.",
        );
    }
    let (scope, rest) = path.split_once(ROLES).unwrap_or((path, ""));
    if version_json(st, scope, false).is_none() {
        return az_err(StatusCode::NOT_FOUND, "ResourceNotFound", "The Resource was not found.");
    }
    let now = created_text(now_unix(), "%Y-%m-%dT%H:%M:%S%.7fZ");
    match (method.as_str(), rest.trim_start_matches('/')) {
        ("GET", "") => {
            if q.get("$filter").map(String::as_str) != Some("atScope()") {
                return az_err(
                    StatusCode::BAD_REQUEST,
                    "UnsupportedQuery",
                    "Only atScope() is modelled.",
                );
            }
            let visible = st.listed_members(scope);
            let mut all: Vec<Value> = st
                .role_assignments
                .lock()
                .unwrap()
                .iter()
                .filter(|a| role_text(a, "scope").eq_ignore_ascii_case(scope))
                .filter(|a| visible.contains(&account_of(role_text(a, "principalType"), role_text(a, "principalId"))))
                .map(|a| {
                    let mut a = a.clone();
                    a.as_object_mut().unwrap().remove("gone");
                    a
                })
                .collect();
            let sub = format!("/subscriptions/{SUBSCRIPTION}");
            all.insert(
                0,
                assignment(
                    &sub,
                    "5e5e5e5e-1111-4000-8000-000000000001",
                    INHERITED_READER,
                    "Group",
                    &now,
                ),
            );
            let from: usize = q.get("$skipToken").and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut v = json!({"value": all.iter().skip(from).take(ROLE_PAGE).collect::<Vec<_>>()});
            if from + ROLE_PAGE < all.len() {
                v["nextLink"] = json!(format!(
                    "https://management.azure.com{path}?api-version=2022-04-01&$filter=atScope()&$skipToken={}",
                    from + ROLE_PAGE
                ));
            }
            axum::Json(v).into_response()
        }
        ("PUT", name) if !name.contains('/') => {
            let role = b
                .pointer("/properties/roleDefinitionId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let principal = b
                .pointer("/properties/principalId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = b
                .pointer("/properties/principalType")
                .and_then(Value::as_str)
                .unwrap_or("");
            if role
                != format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{READER}")
            {
                return az_err(
                    StatusCode::BAD_REQUEST,
                    "RoleDefinitionDoesNotExist",
                    "The specified role definition does not exist.",
                );
            }
            if principal.starts_with("ffffffff") {
                return az_err(
                    StatusCode::BAD_REQUEST,
                    "PrincipalNotFound",
                    &format!("Principal {principal} does not exist in the directory {TENANT}."),
                );
            }
            let account = account_of(kind, principal);
            let mut list = st.role_assignments.lock().unwrap();
            list.retain(|a| !(a["gone"] == json!(true) && a["id"].as_str() == Some(path)));
            let clash = list.iter().any(|a| {
                a["id"].as_str() != Some(path)
                    && a["gone"] != json!(true)
                    && role_text(a, "scope").eq_ignore_ascii_case(scope)
                    && account_of(role_text(a, "principalType"), role_text(a, "principalId")) == account
            });
            if clash {
                return az_err(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The role assignment already exists.",
                );
            }
            let new = assignment(scope, name, principal, kind, &now);
            let existed = list.iter().any(|a| a["id"].as_str() == Some(path));
            list.retain(|a| a["id"].as_str() != Some(path));
            list.push(new.clone());
            drop(list);
            if !existed {
                st.members
                    .lock()
                    .unwrap()
                    .entry(scope.to_string())
                    .or_default()
                    .push((account.clone(), "shared".into()));
                st.member_changed(scope, &account, false);
            }
            (
                if existed { StatusCode::OK } else { StatusCode::CREATED },
                axum::Json(new),
            )
                .into_response()
        }
        ("DELETE", name) if !name.contains('/') => {
            let mut list = st.role_assignments.lock().unwrap();
            let Some(a) = list
                .iter_mut()
                .find(|a| a["id"].as_str() == Some(path) && a["gone"] != json!(true))
            else {
                return StatusCode::NO_CONTENT.into_response();
            };
            a["gone"] = json!(true);
            let mut answer = a.clone();
            answer.as_object_mut().unwrap().remove("gone");
            let account = account_of(role_text(a, "principalType"), role_text(a, "principalId"));
            drop(list);
            if let Some(m) = st.members.lock().unwrap().get_mut(scope) {
                m.retain(|(x, _)| *x != account);
            }
            st.member_changed(scope, &account, true);
            axum::Json(answer).into_response()
        }
        _ => az_err(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The method is not allowed.",
        ),
    }
}

/// A Reader role assignment as ARM answers it.
fn assignment(scope: &str, name: &str, principal: &str, kind: &str, now: &str) -> Value {
    json!({
        "id": format!("{scope}{ROLES}/{name}"), "name": name, "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
            "principalId": principal, "principalType": kind, "scope": scope,
            "condition": null, "conditionVersion": null, "description": null,
            "createdOn": now, "updatedOn": now, "createdBy": CLIENT, "updatedBy": CLIENT,
            "delegatedManagedIdentityResourceId": null,
        },
    })
}
