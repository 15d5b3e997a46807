//! AWS short-lived credentials, as the AWS SDKs' default chain gets them in a pod:
//!
//! - **EKS Pod Identity**: `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the node's Pod Identity agent),
//!   asked with the token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` as `Authorization`.
//! - **IRSA**: `sts:AssumeRoleWithWebIdentity` (unsigned) with the projected ServiceAccount token
//!   of `AWS_WEB_IDENTITY_TOKEN_FILE` for `AWS_ROLE_ARN`.
//! - **Another account's role**: `sts:AssumeRole`, signed with the keys beneath (with the role's
//!   `ExternalId` when given).
//!
//! STS is the regional endpoint of `AWS_REGION` (`sts.<region>.amazonaws.com`), or
//! `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` as the SDKs honour them. The keys come back under
//! the credentials Secret's names (`accessKeyId`, `secretAccessKey`, `sessionToken`), so every
//! EC2 call signs them as it signs a Secret's, with `X-Amz-Security-Token`.

use std::collections::BTreeMap;

use crate::cloud::identity::{self, Exchange, Temporary};
use crate::cloud::xml::{self, Node};
use crate::cloud::{self, Attempt, ErrorClass, ProviderError};
use crate::image_replication::vm::facts::Identity;
use crate::oci::client::urlencode;

use super::Aws;

pub const VERSION: &str = "2011-06-15";

/// What the SDKs read from the environment.
pub const IDENTITY: Identity = Identity {
    variables: &[
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_SESSION_NAME",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL",
    ],
    role_rule: "an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)",
    valid_role,
    audience: "sts.amazonaws.com",
};

fn valid_role(arn: &str) -> bool {
    let p: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6
        && p[0] == "arn"
        && p[1].starts_with("aws")
        && p[2] == "iam"
        && p[4].len() == 12
        && p[4].bytes().all(|b| b.is_ascii_digit())
        && p[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
}

/// The STS error codes of the operations used (STS API reference): a refused identity or role
/// is the credentials' fault (not tried again until something changes), the identity
/// provider's trouble is retried.
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    ("AccessDenied", ErrorClass::Auth),
    ("InvalidIdentityToken", ErrorClass::Auth),
    ("ExpiredTokenException", ErrorClass::Auth),
    ("IDPRejectedClaim", ErrorClass::Auth),
    ("InvalidClientTokenId", ErrorClass::Auth),
    ("SignatureDoesNotMatch", ErrorClass::Auth),
    ("RegionDisabledException", ErrorClass::Auth),
    ("IDPCommunicationError", ErrorClass::RetryLater),
    ("Throttling", ErrorClass::Throttled),
    ("MalformedPolicyDocument", ErrorClass::Permanent),
    ("PackedPolicyTooLarge", ErrorClass::Permanent),
    ("ValidationError", ErrorClass::Permanent),
];

/// The STS endpoint and the region it signs for.
fn endpoint(vars: &BTreeMap<String, String>) -> (String, String) {
    let region = vars
        .get("AWS_REGION")
        .or_else(|| vars.get("AWS_DEFAULT_REGION"))
        .cloned()
        .unwrap_or_else(|| "us-east-1".into());
    let url = match vars
        .get("AWS_ENDPOINT_URL_STS")
        .or_else(|| vars.get("AWS_ENDPOINT_URL"))
    {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if region.starts_with("cn-") => format!("https://sts.{region}.amazonaws.com.cn"),
        None => format!("https://sts.{region}.amazonaws.com"),
    };
    (url, region)
}

/// A role session's name: `[\w+=,.@-]{2,64}`, as STS takes it.
fn session_name(s: &str) -> String {
    identity::session_name(s, "_+=,.@-", 64)
}

/// The keys of an STS answer's `Credentials`.
fn credentials(doc: &Node, op: &str) -> Result<Temporary, ProviderError> {
    let c = doc
        .find("Credentials")
        .ok_or_else(|| ProviderError::transient(format!("{op}: the answer has no Credentials")))?;
    let field = |n: &str| {
        c.text_at(n)
            .ok_or_else(|| ProviderError::transient(format!("{op}: the answer's Credentials have no {n}")))
    };
    Ok(Temporary {
        secret: [
            ("accessKeyId", field("AccessKeyId")?),
            ("secretAccessKey", field("SecretAccessKey")?),
            ("sessionToken", field("SessionToken")?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect(),
        expires: c.text_at("Expiration").and_then(|e| parse_time(&e)),
    })
}

fn parse_time(s: &str) -> Option<i64> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn sts_error(op: &str, status: u16, body: &str, retry_after: Option<std::time::Duration>, who: &str) -> Attempt {
    let doc = xml::parse(body).ok();
    let text = |n: &str| doc.as_ref().and_then(|d| d.find(n)).map(|n| n.text.trim().to_string());
    let code = text("Code").unwrap_or_default();
    let msg = text("Message").unwrap_or_else(|| cloud::short(body));
    let class = cloud::lookup(ERROR_CODES, &code).unwrap_or_else(|| cloud::by_status(status));
    cloud::attempt(
        class,
        &code,
        format!("{op} for {who}: {code}: {msg}"),
        "check the role's trust policy (the identity provider, the audience, the ServiceAccount) and that the caller may sts:AssumeRole it",
        retry_after,
    )
}

impl Aws {
    /// Short-lived keys for `how`.
    pub(super) async fn exchange_keys(&self, how: &Exchange) -> Result<Temporary, ProviderError> {
        match how {
            Exchange::Workload { vars } => self.workload(vars).await,
            Exchange::Assume {
                base,
                role,
                external_id,
                session,
                vars,
            } => {
                let mut form = vec![
                    ("RoleArn".to_string(), role.clone()),
                    ("RoleSessionName".to_string(), session_name(session)),
                ];
                if let Some(x) = external_id {
                    form.push(("ExternalId".into(), x.clone()));
                }
                self.sts(vars, "AssumeRole", form, Some(base), &format!("role {role}"))
                    .await
            }
        }
    }

    async fn workload(&self, vars: &BTreeMap<String, String>) -> Result<Temporary, ProviderError> {
        if let Some(uri) = vars.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            return self.pod_identity(uri, vars).await;
        }
        let (Some(role), Some(file)) = (vars.get("AWS_ROLE_ARN"), vars.get("AWS_WEB_IDENTITY_TOKEN_FILE")) else {
            return Err(ProviderError::auth(
                "no credentialsSecretRef, and the operator's pod has no AWS workload identity: set AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (IRSA: the chart's identity.aws.roleArn) or use EKS Pod Identity, or name a Secret",
            ));
        };
        let token = identity::read_token(file, "AWS_WEB_IDENTITY_TOKEN_FILE")?;
        let who = format!("role {role} ({})", identity::audience(&token));
        let session = vars
            .get("AWS_ROLE_SESSION_NAME")
            .cloned()
            .unwrap_or_else(|| "image-replication-operator".into());
        let form = vec![
            ("RoleArn".to_string(), role.clone()),
            ("RoleSessionName".to_string(), session_name(&session)),
            ("WebIdentityToken".to_string(), token),
        ];
        self.sts(vars, "AssumeRoleWithWebIdentity", form, None, &who).await
    }

    /// One STS Query API call: signed with `signer`'s keys, or unsigned (web identity).
    async fn sts(
        &self,
        vars: &BTreeMap<String, String>,
        action: &'static str,
        params: Vec<(String, String)>,
        signer: Option<&crate::cloud::Account>,
        who: &str,
    ) -> Result<Temporary, ProviderError> {
        let (base, region) = endpoint(vars);
        let mut form: Vec<(String, String)> =
            vec![("Action".into(), action.into()), ("Version".into(), VERSION.into())];
        form.extend(params);
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.backoff
            .run(action, false, || {
                let (base, region, body) = (&base, &region, &body);
                async move {
                    let url = reqwest::Url::parse(&format!("{base}/"))
                        .map_err(|e| ProviderError::permanent(format!("{action}: bad STS endpoint {base}: {e}")))?;
                    let rb = match signer {
                        Some(a) => self.signed(a, region, "sts", &url, body)?,
                        None => self
                            .http
                            .post(url)
                            .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                    };
                    let a = cloud::exchange(action, rb.body(body.clone())).await?;
                    if a.ok() {
                        let doc = xml::parse(&a.text)
                            .map_err(|e| ProviderError::transient(format!("{action}: unreadable answer: {e}")))?;
                        credentials(&doc, action).map_err(Attempt::from)
                    } else {
                        Err(sts_error(action, a.status, &a.text, a.retry_after, who))
                    }
                }
            })
            .await
    }

    /// EKS Pod Identity: the agent's answer (`AccessKeyId`, `SecretAccessKey`, `Token`,
    /// `Expiration`). The agent's address comes from the pod's environment (the platform's),
    /// not from a spec or a Secret, so the egress policy's cloud hosts do not apply to it.
    async fn pod_identity(&self, uri: &str, vars: &BTreeMap<String, String>) -> Result<Temporary, ProviderError> {
        let op = "EKS Pod Identity";
        let token = match (
            vars.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            vars.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(f), _) => identity::read_token(f, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")?,
            (None, Some(t)) => t.clone(),
            (None, None) => String::new(),
        };
        self.backoff
            .run(op, true, || {
                let token = &token;
                async move {
                    let resp = self
                        .agent
                        .get(uri)
                        .header("Authorization", token.as_str())
                        .send()
                        .await
                        .map_err(|e| cloud::transport(op, e))?;
                    let status = resp.status().as_u16();
                    let text = resp.text().await.map_err(|e| cloud::transport(op, e))?;
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if !(200..300).contains(&status) {
                        let class = match status {
                            400 | 401 | 403 => ErrorClass::Auth,
                            s => cloud::by_status(s),
                        };
                        let code = v["code"].as_str().unwrap_or("").to_string();
                        let msg = v["message"]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| cloud::short(&text));
                        return Err(cloud::attempt(
                            class,
                            &code,
                            format!("{op}: HTTP {status} {code}: {msg}"),
                            "check the EKS Pod Identity association of the operator's ServiceAccount",
                            None,
                        ));
                    }
                    let field = |n: &str| {
                        v[n].as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
                            Attempt::from(ProviderError::transient(format!("{op}: the answer has no {n}")))
                        })
                    };
                    Ok(Temporary {
                        secret: [
                            ("accessKeyId".to_string(), field("AccessKeyId")?),
                            ("secretAccessKey".to_string(), field("SecretAccessKey")?),
                            ("sessionToken".to_string(), field("Token")?),
                        ]
                        .into(),
                        expires: v["Expiration"].as_str().and_then(parse_time),
                    })
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_and_session_names() {
        assert!(valid_role("arn:aws:iam::123456789012:role/imgrep"));
        assert!(valid_role("arn:aws-cn:iam::123456789012:role/path/imgrep"));
        assert!(!valid_role("arn:aws:iam::1234:role/imgrep"));
        assert!(!valid_role("arn:aws:iam::123456789012:user/imgrep"));
        assert!(!valid_role("imgrep"));
        assert_eq!(session_name("imgrep-team a/b"), "imgrep-team-a-b");
        assert_eq!(session_name("x"), "x-");
        assert_eq!(session_name(&"y".repeat(80)).len(), 64);
    }

    #[test]
    fn sts_answers_and_errors() {
        let doc = xml::parse(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>\
             <Expiration>2026-12-07T15:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
             </AssumeRoleWithWebIdentityResponse>",
        )
        .unwrap();
        let t = credentials(&doc, "AssumeRoleWithWebIdentity").unwrap();
        assert_eq!(t.secret["sessionToken"], b"t");
        assert_eq!(t.expires, Some(1_796_655_600));
        let e = sts_error(
            "AssumeRoleWithWebIdentity",
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Incorrect token audience</Message></Error></ErrorResponse>",
            None,
            "role r (audience x, issuer y)",
        );
        assert!(e.error.auth && e.error.is("InvalidIdentityToken"));
        assert!(
            e.error.message.contains("role r (audience x, issuer y)"),
            "{}",
            e.error.message
        );
        let (url, region) = endpoint(&[("AWS_REGION".to_string(), "eu-west-1".to_string())].into());
        assert_eq!(
            (url.as_str(), region.as_str()),
            ("https://sts.eu-west-1.amazonaws.com", "eu-west-1")
        );
    }
}
