//! Huawei Cloud short-lived credentials, as the Huawei Cloud SDK's federal accessor gets them:
//!
//! - **CCE workload identity** (`HUAWEICLOUD_SDK_IDP_ID`, `HUAWEICLOUD_SDK_ID_TOKEN_FILE`): IAM
//!   `CreateTokenWithIdToken` (`POST /v3.0/OS-AUTH/id-token/tokens`, `X-Idp-Id`, unsigned) turns
//!   the projected ServiceAccount token into an IAM token (`X-Subject-Token`), then
//!   `CreateTemporaryAccessKeyByToken` (`POST /v3.0/OS-CREDENTIAL/securitytokens`, method
//!   `token`) into temporary AK/SK and a security token.
//! - **An agency of another account** (`assumeRole.roleArn: iam::<domain id>:agency:<name>`):
//!   `CreateTemporaryAccessKeyByAgency` (the same path, method `assume_role`), signed with the
//!   keys beneath.
//!
//! IAM is `HUAWEICLOUD_SDK_IAM_ENDPOINT` or the global IAM. The keys come back under the
//! credentials Secret's names (`accessKey`, `secretKey`, `securityToken`, and `iamEndpoint` when
//! the environment names one), so every IMS call signs `X-Security-Token`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::identity::{self, Exchange, Temporary};
use crate::cloud::{self, ProviderError};
use crate::image_replication::vm::facts::Identity;

use super::{Call, Huawei, IAM};

pub const IDENTITY: Identity = Identity {
    variables: &[
        "HUAWEICLOUD_SDK_IDP_ID",
        "HUAWEICLOUD_SDK_ID_TOKEN_FILE",
        "HUAWEICLOUD_SDK_IAM_ENDPOINT",
    ],
    role_rule: "an IAM agency (iam::<account (domain) id>:agency:<agency name>)",
    valid_role,
    audience: "sts.myhuaweicloud.com",
};

/// The keys' life asked for: the SDK's 6 hours for a workload identity, an hour for an agency.
const WORKLOAD_SECONDS: u64 = 6 * 3600;
const AGENCY_SECONDS: u64 = 3600;

/// (domain id, agency name) of `iam::<domain id>:agency:<name>`.
fn agency(urn: &str) -> Option<(&str, &str)> {
    let rest = urn.strip_prefix("iam::")?;
    let (domain, name) = rest.split_once(":agency:")?;
    (!domain.is_empty() && domain.bytes().all(|b| b.is_ascii_alphanumeric()) && !name.is_empty() && !name.contains(':'))
        .then_some((domain, name))
}

fn valid_role(urn: &str) -> bool {
    agency(urn).is_some()
}

fn iam(vars: &BTreeMap<String, String>) -> String {
    vars.get("HUAWEICLOUD_SDK_IAM_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| IAM.to_string())
}

/// The keys of a `securitytokens` answer (`credential`).
fn credentials(v: &Value, iam: Option<&str>, op: &str) -> Result<Temporary, ProviderError> {
    let c = &v["credential"];
    let field = |n: &str| {
        c[n].as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| ProviderError::transient(format!("{op}: the answer's credential has no {n}")))
    };
    let mut secret: BTreeMap<String, Vec<u8>> = [
        ("accessKey".to_string(), field("access")?),
        ("secretKey".to_string(), field("secret")?),
        ("securityToken".to_string(), field("securitytoken")?),
    ]
    .into();
    if let Some(i) = iam {
        secret.insert("iamEndpoint".into(), i.as_bytes().to_vec());
    }
    Ok(Temporary {
        secret,
        expires: c["expires_at"]
            .as_str()
            .and_then(|e| e.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
    })
}

/// A refusal of the identity or the agency, which waits; other errors as IAM classes them.
fn refusal(e: ProviderError, what: &str) -> ProviderError {
    let auth = e.auth || matches!(e.code.as_deref(), Some(c) if c.starts_with("IAM.") || c.starts_with("APIGW.03"));
    ProviderError {
        auth,
        retryable: e.retryable && !auth,
        message: format!("{what}: {}", e.message),
        ..e
    }
}

impl Huawei {
    pub(super) async fn exchange_keys(&self, how: &Exchange) -> Result<Temporary, ProviderError> {
        match how {
            Exchange::Workload { vars } => self.workload(vars).await,
            Exchange::Assume {
                base,
                role,
                session,
                vars,
                ..
            } => {
                let (domain, name) = agency(role)
                    .ok_or_else(|| ProviderError::permanent(format!("{role:?} is not {}", IDENTITY.role_rule)))?;
                let base_iam = base.text("iamEndpoint").unwrap_or_else(|| iam(vars));
                let body = json!({"auth": {"identity": {"methods": ["assume_role"], "assume_role": {
                    "domain_id": domain, "agency_name": name, "duration_seconds": AGENCY_SECONDS,
                    "session_user": {"name": session_user(session)}}}}});
                let v = self
                    .call(
                        base,
                        Call {
                            op: "CreateTemporaryAccessKeyByAgency",
                            method: Method::POST,
                            base: &base_iam,
                            path: "/v3.0/OS-CREDENTIAL/securitytokens",
                            query: &[],
                            project: None,
                            body: Some(body),
                        },
                    )
                    .await
                    .map_err(|e| refusal(e, &format!("agency {role}")))?;
                credentials(
                    &v,
                    base.text("iamEndpoint").as_deref(),
                    "CreateTemporaryAccessKeyByAgency",
                )
            }
        }
    }

    async fn workload(&self, vars: &BTreeMap<String, String>) -> Result<Temporary, ProviderError> {
        let (Some(idp), Some(file)) = (
            vars.get("HUAWEICLOUD_SDK_IDP_ID"),
            vars.get("HUAWEICLOUD_SDK_ID_TOKEN_FILE"),
        ) else {
            return Err(ProviderError::auth(
                "no credentialsSecretRef, and the operator's pod has no Huawei Cloud workload identity: set HUAWEICLOUD_SDK_IDP_ID and HUAWEICLOUD_SDK_ID_TOKEN_FILE (CCE workload identity), or name a Secret",
            ));
        };
        let token = identity::read_token(file, "HUAWEICLOUD_SDK_ID_TOKEN_FILE")?;
        let who = format!("identity provider {idp} ({})", identity::audience(&token));
        let iam = iam(vars);
        let op = "CreateTokenWithIdToken";
        let url = format!("{iam}/v3.0/OS-AUTH/id-token/tokens");
        let body = json!({"auth": {"id_token": {"id": token}}}).to_string();
        let subject = self
            .backoff
            .run(op, false, || {
                let (url, body) = (&url, &body);
                async move {
                    cloud::allowed(op, url)?;
                    let resp = self
                        .http
                        .post(url.as_str())
                        .header("Content-Type", "application/json;charset=UTF-8")
                        .header("X-Idp-Id", idp.as_str())
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(|e| cloud::transport(op, e))?;
                    let status = resp.status().as_u16();
                    let subject = resp
                        .headers()
                        .get("X-Subject-Token")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    let text = resp.text().await.map_err(|e| cloud::transport(op, e))?;
                    match subject {
                        Some(s) if (200..300).contains(&status) => Ok(s),
                        _ if (200..300).contains(&status) => {
                            Err(ProviderError::transient(format!("{op}: the answer has no X-Subject-Token")).into())
                        }
                        _ => Err(super::error(op, status, &text, None)),
                    }
                }
            })
            .await
            .map_err(|e| refusal(e, &format!("{op} for {who}")))?;
        // The IAM token is the credential of the second call (in its body, as the SDK sends it).
        let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": subject, "duration_seconds": WORKLOAD_SECONDS}}}});
        let v = self
            .unsigned(
                &iam,
                "CreateTemporaryAccessKeyByToken",
                "/v3.0/OS-CREDENTIAL/securitytokens",
                body,
            )
            .await
            .map_err(|e| refusal(e, &format!("CreateTemporaryAccessKeyByToken for {who}")))?;
        let carried = vars.get("HUAWEICLOUD_SDK_IAM_ENDPOINT").map(|_| iam.as_str());
        credentials(&v, carried, "CreateTemporaryAccessKeyByToken")
    }

    /// An unsigned JSON POST to IAM.
    async fn unsigned(&self, base: &str, op: &'static str, path: &str, body: Value) -> Result<Value, ProviderError> {
        let url = format!("{base}{path}");
        let body = body.to_string();
        self.backoff
            .run(op, false, || {
                let (url, body) = (&url, &body);
                async move {
                    let rb = self
                        .http
                        .post(url.as_str())
                        .header("Content-Type", "application/json;charset=UTF-8")
                        .body(body.clone());
                    let a = cloud::exchange(op, rb).await?;
                    if a.ok() {
                        serde_json::from_str(&a.text)
                            .map_err(|e| ProviderError::transient(format!("{op}: unreadable answer: {e}")).into())
                    } else {
                        Err(super::error(op, a.status, &a.text, a.retry_after))
                    }
                }
            })
            .await
    }
}

/// A session user's name for the cloud's audit log: `[\w.-]{1,64}`.
fn session_user(s: &str) -> String {
    identity::session_name(s, "_.-", 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agencies_and_answers() {
        assert_eq!(agency("iam::0a1b2c3d4e:agency:imgrep"), Some(("0a1b2c3d4e", "imgrep")));
        assert!(!valid_role("arn:aws:iam::123456789012:role/x"));
        assert!(!valid_role("iam::x-y:agency:a"));
        let t = credentials(
            &json!({"credential": {"access": "AK", "secret": "SK", "securitytoken": "t", "expires_at": "2026-12-07T15:00:00.000000Z"}}),
            Some("https://iam.example"),
            "x",
        )
        .unwrap();
        assert_eq!(t.secret["securityToken"], b"t");
        assert_eq!(t.secret["iamEndpoint"], b"https://iam.example");
        assert_eq!(t.expires, Some(1_796_655_600));
        let e = refusal(ProviderError::permanent("m").with_code("IAM.0101"), "agency a");
        assert!(e.auth && e.message == "agency a: m");
    }
}
