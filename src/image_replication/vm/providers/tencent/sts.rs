//! Tencent Cloud short-lived credentials, as the Tencent Cloud SDK's OIDC provider gets them:
//!
//! - **TKE OIDC** (the pod's workload identity): STS `AssumeRoleWithWebIdentity` (unsigned,
//!   `Authorization: SKIP`) with the projected ServiceAccount token of
//!   `TKE_WEB_IDENTITY_TOKEN_FILE`, for `TKE_ROLE_ARN` through `TKE_PROVIDER_ID`, in `TKE_REGION`.
//! - **A CAM role of another account**: STS `AssumeRole`, signed with the keys beneath.
//!
//! STS is `sts.tencentcloudapi.com`; `TENCENTCLOUD_STS_ENDPOINT` (this operator's, for private
//! clouds and tests) overrides it. The keys come back under the credentials Secret's names
//! (`secretId`, `secretKey`, `token`), so every CVM call carries `X-TC-Token`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cloud::ProviderError;
use crate::cloud::identity::{self, Exchange, Temporary};
use crate::image_replication::vm::facts::Identity;

use super::{Api3, Tencent, api3_at};

pub const IDENTITY: Identity = Identity {
    variables: &[
        "TKE_REGION",
        "TKE_PROVIDER_ID",
        "TKE_WEB_IDENTITY_TOKEN_FILE",
        "TKE_ROLE_ARN",
        "TENCENTCLOUD_STS_ENDPOINT",
    ],
    role_rule: "a CAM role (qcs::cam::uin/<account id>:roleName/<name>)",
    valid_role,
    audience: "sts.cloud.tencent.com",
};

const STS: Api3 = Api3 {
    service: "sts",
    version: "2018-08-13",
    endpoint: "https://sts.tencentcloudapi.com",
};

/// The keys' life asked for (the SDK's default).
const DURATION: u64 = 7200;

fn valid_role(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("qcs::cam::uin/") else {
        return false;
    };
    let Some((uin, name)) = rest.split_once(':') else {
        return false;
    };
    !uin.is_empty()
        && uin.bytes().all(|b| b.is_ascii_digit())
        && (name.strip_prefix("roleName/").is_some_and(|n| !n.is_empty())
            || name.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
}

/// Whether an STS error is the identity's or the role's fault (its trust policy, the token):
/// such a refusal waits; the rest is classed as every Tencent error is.
fn refused(code: &str) -> bool {
    [
        "AuthFailure",
        "UnauthorizedOperation",
        "OperationDenied",
        "InvalidParameter.WebIdentityToken",
        "InvalidParameter.Account",
        "InvalidParameter.Role",
        "ResourceNotFound.Role",
        "InvalidParameter.ExtendStrategyOverSize",
    ]
    .iter()
    .any(|p| code.starts_with(p))
}

/// A role session's name: `[\w+=,.@-]{2,128}`, as STS takes it.
fn session_name(s: &str) -> String {
    identity::session_name(s, "_+=,.@-", 128)
}

fn credentials(r: &Value, op: &str) -> Result<Temporary, ProviderError> {
    let c = &r["Credentials"];
    let field = |n: &str| {
        c[n].as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| ProviderError::transient(format!("{op}: the answer's Credentials have no {n}")))
    };
    Ok(Temporary {
        secret: [
            ("secretId".to_string(), field("TmpSecretId")?),
            ("secretKey".to_string(), field("TmpSecretKey")?),
            ("token".to_string(), field("Token")?),
        ]
        .into(),
        expires: r["ExpiredTime"].as_i64(),
    })
}

impl Tencent {
    pub(super) async fn exchange_keys(&self, how: &Exchange) -> Result<Temporary, ProviderError> {
        let (signer, vars, region, action, body, who) = match how {
            Exchange::Workload { vars } => {
                let (Some(region), Some(provider), Some(file), Some(role)) = (
                    vars.get("TKE_REGION"),
                    vars.get("TKE_PROVIDER_ID"),
                    vars.get("TKE_WEB_IDENTITY_TOKEN_FILE"),
                    vars.get("TKE_ROLE_ARN"),
                ) else {
                    return Err(ProviderError::auth(
                        "no credentialsSecretRef, and the operator's pod has no Tencent Cloud TKE OIDC identity: set TKE_REGION, TKE_PROVIDER_ID, TKE_WEB_IDENTITY_TOKEN_FILE and TKE_ROLE_ARN (TKE's pod identity webhook does), or name a Secret",
                    ));
                };
                let token = identity::read_token(file, "TKE_WEB_IDENTITY_TOKEN_FILE")?;
                let who = format!("role {role} ({})", identity::audience(&token));
                let body = json!({
                    "ProviderId": provider, "WebIdentityToken": token, "RoleArn": role,
                    "RoleSessionName": session_name("image-replication-operator"), "DurationSeconds": DURATION,
                });
                (None, vars, region.clone(), "AssumeRoleWithWebIdentity", body, who)
            }
            Exchange::Assume {
                base,
                role,
                external_id,
                session,
                vars,
            } => {
                let mut body =
                    json!({"RoleArn": role, "RoleSessionName": session_name(session), "DurationSeconds": DURATION});
                if let Some(x) = external_id {
                    body["ExternalId"] = json!(x);
                }
                let region = vars.get("TKE_REGION").cloned().unwrap_or_else(|| "ap-guangzhou".into());
                (Some(base), vars, region, "AssumeRole", body, format!("role {role}"))
            }
        };
        let base = endpoint(vars);
        let r = api3_at(&self.http, &self.backoff, signer, &base, &STS, &region, action, body)
            .await
            .map_err(|e| {
                let auth = e.auth || e.code.as_deref().is_some_and(refused);
                ProviderError {
                    auth,
                    retryable: e.retryable && !auth,
                    message: format!("{action} for {who}: {}", e.message),
                    ..e
                }
            })?;
        credentials(&r, action)
    }
}

fn endpoint(vars: &BTreeMap<String, String>) -> String {
    match vars.get("TENCENTCLOUD_STS_ENDPOINT") {
        Some(u) if u.contains("://") => u.trim_end_matches('/').to_string(),
        Some(host) => format!("https://{}", host.trim_end_matches('/')),
        None => STS.endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_answers() {
        assert!(valid_role("qcs::cam::uin/100000000001:roleName/imgrep"));
        assert!(!valid_role("qcs::cam::uin/abc:roleName/imgrep"));
        assert!(!valid_role("acs:ram::1:role/x"));
        let t = credentials(
            &json!({"Credentials": {"Token": "t", "TmpSecretId": "AKID", "TmpSecretKey": "k"}, "ExpiredTime": 1_796_655_600, "Expiration": "2026-12-07T15:00:00Z"}),
            "AssumeRole",
        )
        .unwrap();
        assert_eq!(t.secret["token"], b"t");
        assert_eq!(t.expires, Some(1_796_655_600));
        assert!(refused("InvalidParameter.WebIdentityTokenError") && refused("AuthFailure.SignatureFailure"));
        assert!(!refused("RequestLimitExceeded") && !refused("InternalError"));
    }
}
