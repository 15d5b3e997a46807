//! Alibaba Cloud short-lived credentials, as the Alibaba Cloud credentials SDK gets them:
//!
//! - **ACK RRSA** (the pod's workload identity): STS `AssumeRoleWithOIDC` (unsigned) with the
//!   projected ServiceAccount token of `ALIBABA_CLOUD_OIDC_TOKEN_FILE`, for
//!   `ALIBABA_CLOUD_ROLE_ARN` through `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`.
//! - **A RAM role of another account**: STS `AssumeRole`, signed with the keys beneath.
//!
//! STS is `sts.aliyuncs.com`, or `sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com` as the SDK
//! builds it (`ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`); `ALIBABA_CLOUD_STS_ENDPOINT` (this
//! operator's, for private clouds and tests) overrides it. The keys come back under the
//! credentials Secret's names (`accessKeyId`, `accessKeySecret`, `securityToken`), so every ECS
//! call carries the `SecurityToken` it signs.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cloud::identity::{self, Exchange, Temporary};
use crate::cloud::{self, Attempt, ErrorClass, ProviderError};
use crate::image_replication::vm::facts::Identity;

use super::Alibaba;

pub const VERSION: &str = "2015-04-01";
/// The keys' life asked for (the SDK's default).
const DURATION: &str = "3600";

pub const IDENTITY: Identity = Identity {
    variables: &[
        "ALIBABA_CLOUD_ROLE_ARN",
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
        "ALIBABA_CLOUD_ROLE_SESSION_NAME",
        "ALIBABA_CLOUD_STS_REGION",
        "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED",
        "ALIBABA_CLOUD_STS_ENDPOINT",
    ],
    role_rule: "a RAM role ARN (acs:ram::<account id>:role/<name>)",
    valid_role,
    audience: "sts.aliyuncs.com",
};

fn valid_role(arn: &str) -> bool {
    let p: Vec<&str> = arn.splitn(5, ':').collect();
    p.len() == 5
        && p[0] == "acs"
        && p[1] == "ram"
        && p[2].is_empty()
        && !p[3].is_empty()
        && p[3].bytes().all(|b| b.is_ascii_digit())
        && p[4].strip_prefix("role/").is_some_and(|n| !n.is_empty())
}

/// The STS error codes (STS API reference): a refused token or role waits, throttling and the
/// service's trouble are retried.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("AuthenticationFail*", ErrorClass::Auth),
    ("NoPermission*", ErrorClass::Auth),
    ("EntityNotExist*", ErrorClass::Auth),
    ("InvalidAccessKeyId*", ErrorClass::Auth),
    ("SignatureDoesNotMatch", ErrorClass::Auth),
    ("InvalidSecurityToken*", ErrorClass::Auth),
    ("Throttling*", ErrorClass::Throttled),
    ("ServiceUnavailable", ErrorClass::RetryLater),
    ("InternalError", ErrorClass::RetryLater),
    ("InvalidParameter*", ErrorClass::Permanent),
    ("MissingParameter*", ErrorClass::Permanent),
];

fn endpoint(vars: &BTreeMap<String, String>) -> String {
    if let Some(u) = vars.get("ALIBABA_CLOUD_STS_ENDPOINT") {
        let u = u.trim_end_matches('/');
        return if u.contains("://") {
            u.to_string()
        } else {
            format!("https://{u}")
        };
    }
    let prefix = match vars.get("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED") {
        Some(v) if v.eq_ignore_ascii_case("true") => "sts-vpc",
        _ => "sts",
    };
    match vars.get("ALIBABA_CLOUD_STS_REGION") {
        Some(r) => format!("https://{prefix}.{r}.aliyuncs.com"),
        None => "https://sts.aliyuncs.com".into(),
    }
}

/// A role session's name: `[\w.@-]{2,64}`, as STS takes it.
fn session_name(s: &str) -> String {
    identity::session_name(s, "_.@-", 64)
}

fn credentials(v: &Value, op: &str) -> Result<Temporary, Attempt> {
    let c = &v["Credentials"];
    let field = |n: &str| {
        c[n].as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
            Attempt::from(ProviderError::transient(format!(
                "{op}: the answer's Credentials have no {n}"
            )))
        })
    };
    Ok(Temporary {
        secret: [
            ("accessKeyId".to_string(), field("AccessKeyId")?),
            ("accessKeySecret".to_string(), field("AccessKeySecret")?),
            ("securityToken".to_string(), field("SecurityToken")?),
        ]
        .into(),
        expires: c["Expiration"]
            .as_str()
            .and_then(|e| e.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
    })
}

fn sts_error(op: &str, a: &cloud::Answer, who: &str) -> Attempt {
    let v: Value = serde_json::from_str(&a.text).unwrap_or_default();
    let code = v["Code"].as_str().unwrap_or("").to_string();
    let msg = v["Message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| cloud::short(&a.text));
    let class = cloud::lookup(ERROR_CODES, &code).unwrap_or_else(|| cloud::by_status(a.status));
    cloud::attempt(
        class,
        &code,
        format!("{op} for {who}: {code}: {msg}"),
        "check the RAM role's trust policy (the OIDC provider, the audience, the ServiceAccount) and that the caller may sts:AssumeRole it",
        a.retry_after,
    )
}

impl Alibaba {
    pub(super) async fn exchange_keys(&self, how: &Exchange) -> Result<Temporary, ProviderError> {
        let (signer, vars, action, params, who) = match how {
            Exchange::Workload { vars } => {
                let (Some(role), Some(provider), Some(file)) = (
                    vars.get("ALIBABA_CLOUD_ROLE_ARN"),
                    vars.get("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
                    vars.get("ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
                ) else {
                    return Err(ProviderError::auth(
                        "no credentialsSecretRef, and the operator's pod has no Alibaba Cloud RRSA identity: set ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE (ACK's pod identity webhook does), or name a Secret",
                    ));
                };
                let token = identity::read_token(file, "ALIBABA_CLOUD_OIDC_TOKEN_FILE")?;
                let who = format!("role {role} ({})", identity::audience(&token));
                let session = vars
                    .get("ALIBABA_CLOUD_ROLE_SESSION_NAME")
                    .cloned()
                    .unwrap_or_else(|| "image-replication-operator".into());
                let params = vec![
                    ("DurationSeconds", DURATION.to_string()),
                    ("RoleArn", role.clone()),
                    ("OIDCProviderArn", provider.clone()),
                    ("OIDCToken", token),
                    ("RoleSessionName", session_name(&session)),
                ];
                (None, vars, "AssumeRoleWithOIDC", params, who)
            }
            Exchange::Assume {
                base,
                role,
                external_id,
                session,
                vars,
            } => {
                let mut params = vec![
                    ("DurationSeconds", DURATION.to_string()),
                    ("RoleArn", role.clone()),
                    ("RoleSessionName", session_name(session)),
                ];
                if let Some(x) = external_id {
                    params.push(("ExternalId", x.clone()));
                }
                (Some(base), vars, "AssumeRole", params, format!("role {role}"))
            }
        };
        let v = self
            .rpc(signer, &endpoint(vars), VERSION, action, &params, |a| {
                sts_error(action, a, &who)
            })
            .await?;
        credentials(&v, action).map_err(|a| a.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_endpoints_and_answers() {
        assert!(valid_role("acs:ram::1234567890123456:role/imgrep"));
        assert!(!valid_role("arn:aws:iam::123456789012:role/imgrep"));
        assert!(!valid_role("acs:ram::team:role/imgrep"));
        let v = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(endpoint(&v(&[])), "https://sts.aliyuncs.com");
        assert_eq!(
            endpoint(&v(&[
                ("ALIBABA_CLOUD_STS_REGION", "cn-hangzhou"),
                ("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "true")
            ])),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
        let t = credentials(
            &serde_json::json!({"Credentials": {"AccessKeyId": "STS.a", "AccessKeySecret": "s", "SecurityToken": "t", "Expiration": "2026-12-07T15:00:00Z"}}),
            "AssumeRoleWithOIDC",
        )
        .unwrap();
        assert_eq!(t.secret["securityToken"], b"t");
        assert_eq!(t.expires, Some(1_796_655_600));
        let e = sts_error(
            "AssumeRoleWithOIDC",
            &cloud::Answer {
                status: 400,
                retry_after: None,
                text: r#"{"Code":"AuthenticationFail.OIDCToken.Invalid","Message":"Audience mismatch"}"#.into(),
            },
            "role r",
        );
        assert!(e.error.auth && e.error.is("AuthenticationFail.OIDCToken.Invalid"));
    }
}
