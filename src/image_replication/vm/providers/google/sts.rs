//! Google workload identity federation and service account impersonation, as Google's auth
//! libraries do them:
//!
//! - **The pod's workload identity**: `GOOGLE_APPLICATION_CREDENTIALS` names an
//!   `external_account` credential configuration (as `gcloud iam workload-identity-pools
//!   create-cred-config` writes it): the projected ServiceAccount token (`credential_source.file`)
//!   is exchanged at Google's STS (`token_url`, `POST /v1/token`, RFC 8693 token exchange for the
//!   pool provider's `audience`) for a federated access token; when the configuration names a
//!   service account (`service_account_impersonation_url`), that token is exchanged again for the
//!   service account's (`generateAccessToken`).
//! - **`assumeRole`**: `roleArn` is a service account's email, impersonated with the account's
//!   token (IAM Credentials `generateAccessToken`; the caller needs
//!   `roles/iam.serviceAccountTokenCreator` on it).
//!
//! The token comes back as the Secret key `accessToken` (with `project`), which the provider
//! uses instead of a key file's.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::super::super::facts::Identity;
use super::super::super::{Account, ProviderError};
use super::Google;
use super::oauth::SCOPE;
use crate::cloud::identity::{self, Exchange, Temporary};
use crate::cloud::{self, Attempt, bearer};

pub const IDENTITY: Identity = Identity {
    variables: &[
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        // Ours: the IAM Credentials endpoint (tests, private access).
        "GOOGLE_IAMCREDENTIALS_ENDPOINT",
    ],
    role_rule: "a service account's email (NAME@PROJECT.iam.gserviceaccount.com)",
    valid_role: |r| {
        r.split_once('@')
            .is_some_and(|(n, d)| !n.is_empty() && d.ends_with(".iam.gserviceaccount.com") && d.len() > 24)
    },
    // The projected token's audience: the pool's OIDC provider lists it in allowedAudiences.
    audience: "sts.googleapis.com",
};

const IAM_CREDENTIALS: &str = "https://iamcredentials.googleapis.com";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An `external_account` credential configuration's fields the operator reads.
#[derive(Debug, PartialEq)]
pub struct External {
    pub audience: String,
    pub subject_token_type: String,
    pub token_url: String,
    pub token_file: String,
    pub impersonation_url: Option<String>,
}

impl External {
    pub fn parse(text: &str) -> Result<External, ProviderError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|_| ProviderError::auth("workload identity: GOOGLE_APPLICATION_CREDENTIALS is not JSON"))?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        if s("/type") != "external_account" || s("/audience").is_empty() || s("/credential_source/file").is_empty() {
            return Err(ProviderError::auth(
                "workload identity: GOOGLE_APPLICATION_CREDENTIALS must be an external_account configuration with audience and credential_source.file",
            ));
        }
        Ok(External {
            audience: s("/audience"),
            subject_token_type: Some(s("/subject_token_type"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "urn:ietf:params:oauth:token-type:jwt".into()),
            token_url: Some(s("/token_url"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into()),
            token_file: s("/credential_source/file"),
            impersonation_url: Some(s("/service_account_impersonation_url")).filter(|t| !t.is_empty()),
        })
    }
}

/// The project of a service account's email (`NAME@PROJECT.iam.gserviceaccount.com`).
fn project_of(email: &str) -> Option<String> {
    let domain = email.split_once('@')?.1;
    domain.strip_suffix(".iam.gserviceaccount.com").map(String::from)
}

fn temporary(token: String, expires: Option<i64>, project: Option<String>) -> Temporary {
    let mut secret = BTreeMap::from([("accessToken".to_string(), token.into_bytes())]);
    if let Some(p) = project {
        secret.insert("project".into(), p.into_bytes());
    }
    Temporary { secret, expires }
}

impl Google {
    /// Short-lived tokens for `how` (see the module).
    pub(super) async fn exchange_token(&self, how: &Exchange) -> Result<Temporary, ProviderError> {
        match how {
            Exchange::Workload { vars } => {
                let path = vars.get("GOOGLE_APPLICATION_CREDENTIALS").ok_or_else(|| {
                    ProviderError::auth(
                        "workload identity: GOOGLE_APPLICATION_CREDENTIALS is not set (an external_account credential configuration)",
                    )
                })?;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ProviderError::auth(format!(
                        "workload identity: reading {path} (GOOGLE_APPLICATION_CREDENTIALS): {e}"
                    ))
                })?;
                let ext = External::parse(&text)?;
                let jwt = identity::read_token(&ext.token_file, "credential_source.file")?;
                let (federated, expires) = self.sts_token(&ext, &jwt).await?;
                let project = vars.get("GOOGLE_CLOUD_PROJECT").cloned();
                match &ext.impersonation_url {
                    None => Ok(temporary(federated, expires, project)),
                    Some(url) => {
                        let sa = url
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .trim_end_matches(":generateAccessToken");
                        let (t, exp) = self.generate(url, &federated, sa).await?;
                        Ok(temporary(t, exp, project.or_else(|| project_of(sa))))
                    }
                }
            }
            Exchange::Assume { base, role, vars, .. } => {
                let token = self.token_of(base).await?;
                let root = vars
                    .get("GOOGLE_IAMCREDENTIALS_ENDPOINT")
                    .map_or(IAM_CREDENTIALS, String::as_str);
                let url = format!(
                    "{}/v1/projects/-/serviceAccounts/{role}:generateAccessToken",
                    root.trim_end_matches('/')
                );
                let (t, exp) = self.generate(&url, &token, role).await?;
                let project = base.text("project").or_else(|| project_of(role));
                Ok(temporary(t, exp, project))
            }
        }
    }

    /// RFC 8693 token exchange at Google's STS: the ServiceAccount token for a federated token.
    async fn sts_token(&self, ext: &External, jwt: &str) -> Result<(String, Option<i64>), ProviderError> {
        let enc = crate::oci::client::urlencode;
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", ext.audience.as_str()),
            ("scope", SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", jwt),
            ("subject_token_type", ext.subject_token_type.as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
        let (token, life) = bearer::oauth_token(&self.http, &ext.token_url, form, |r| {
            format!(
                "workload identity: Google STS refused the token for {} ({}): HTTP {} {}: {}",
                ext.audience,
                identity::audience(jwt),
                r.status,
                r.error,
                cloud::short(r.description)
            )
        })
        .await?;
        let expires = k8s_openapi::jiff::Timestamp::now().as_second() + life.as_secs() as i64;
        Ok((token, Some(expires)))
    }

    /// `generateAccessToken` for service account `sa` at `url`, with `token`.
    async fn generate(&self, url: &str, token: &str, sa: &str) -> Result<(String, Option<i64>), ProviderError> {
        let rb = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(json!({"scope": [SCOPE]}).to_string());
        let a = cloud::exchange("generateAccessToken", rb)
            .await
            .map_err(|e: Attempt| e.error)?;
        let v: Value = serde_json::from_str(&a.text).unwrap_or(Value::Null);
        match (a.status, v.get("accessToken").and_then(Value::as_str)) {
            (200, Some(t)) => {
                let expires = v
                    .get("expireTime")
                    .and_then(Value::as_str)
                    .and_then(|e| e.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .map(|t| t.as_second());
                Ok((t.to_string(), expires))
            }
            (status, _) => {
                let why = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                Err(bearer::refused(
                    status,
                    format!(
                        "impersonating service account {sa}: HTTP {status}: {} (the caller needs roles/iam.serviceAccountTokenCreator on it)",
                        cloud::short(why)
                    ),
                ))
            }
        }
    }
}

/// The bearer token of an account: its handed-out `accessToken`, else its key file's.
pub(super) fn handed_out(acct: &Account) -> Option<String> {
    acct.text("accessToken")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_external_account_configuration_and_service_accounts() {
        let cfg = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k8s/providers/c1",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": "/var/run/secrets/imgrep/google/token"},
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/op@p1.iam.gserviceaccount.com:generateAccessToken"
        });
        let e = External::parse(&cfg.to_string()).unwrap();
        assert_eq!(e.token_file, "/var/run/secrets/imgrep/google/token");
        assert!(e.impersonation_url.unwrap().ends_with(":generateAccessToken"));
        let key = json!({"type": "service_account"}).to_string();
        assert!(
            External::parse(&key).unwrap_err().auth,
            "a key file is not a workload identity"
        );
        assert_eq!(
            project_of("copier@golden-images.iam.gserviceaccount.com").as_deref(),
            Some("golden-images")
        );
        assert!((IDENTITY.valid_role)("copier@golden-images.iam.gserviceaccount.com"));
        assert!(
            !(IDENTITY.valid_role)("arn:aws:iam::123456789012:role/x") && !(IDENTITY.valid_role)("copier@example.com")
        );
        let t = temporary("ya29.x".into(), Some(5), Some("p".into()));
        assert!(!format!("{t:?}").contains("ya29"), "Debug never shows the token");
    }
}
