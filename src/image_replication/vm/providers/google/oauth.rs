//! A Google service account's access token, as Google's auth libraries get one: a JWT naming
//! the account (`iss`: its `client_email`), the scope and the token endpoint (`aud`: the key's
//! `token_uri`), signed RS256 with the key's `private_key` (PKCS#8), exchanged at the token
//! endpoint (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) for a bearer token of an
//! hour. Tokens are kept per key and renewed five minutes before they expire (a third of their
//! life before, for tokens shorter than a quarter of an hour).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::super::super::{Account, ProviderError};
use crate::cloud::{self, bearer};

/// Google's token endpoint (a key file names its own `token_uri`).
pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Everything the image calls need (Compute Engine takes `cloud-platform` or `compute`).
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a service-account key file the operator reads.
pub struct Key {
    pub client_email: String,
    pub private_key: String,
    pub private_key_id: String,
    pub token_uri: String,
    pub project_id: String,
}

impl Key {
    /// The key from the credentials Secret's `serviceAccountKey` (the JSON key file as
    /// downloaded); a clear error naming what is missing, never the key itself.
    pub fn read(acct: &Account) -> Result<Key, ProviderError> {
        let text = acct.text("serviceAccountKey").ok_or_else(|| {
            ProviderError::permanent(
                "the credentials Secret needs serviceAccountKey (a service account's JSON key file)",
            )
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| ProviderError::permanent("serviceAccountKey is not a JSON key file"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if s("type") != "service_account" || s("client_email").is_empty() || s("private_key").is_empty() {
            return Err(ProviderError::permanent(
                "serviceAccountKey must be a service account key file (type service_account, with client_email and private_key)",
            ));
        }
        Ok(Key {
            client_email: s("client_email"),
            private_key: s("private_key"),
            private_key_id: s("private_key_id"),
            token_uri: Some(s("token_uri"))
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| TOKEN_URI.into()),
            project_id: s("project_id"),
        })
    }

    /// What the token cache knows the key by: its account and key id (not the key).
    fn cache_key(&self) -> String {
        format!("{}|{}|{}", self.client_email, self.private_key_id, self.token_uri)
    }

    /// The signed assertion, issued at `now` (Unix seconds) for an hour.
    pub fn assertion(&self, now: i64) -> Result<String, ProviderError> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims =
            json!({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let bad = || ProviderError::permanent("serviceAccountKey: private_key is not a PKCS#8 RSA key in PEM");
        let der = pem_body(&self.private_key).ok_or_else(bad)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| bad())?;
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| bad())?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// The DER inside a PEM block.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Access tokens per key.
#[derive(Default)]
pub struct Tokens(crate::cloud::bearer::Tokens);

impl Tokens {
    /// A bearer token for the account's key: the one kept until it is due for renewal, else a
    /// new one from the token endpoint.
    pub async fn get(&self, http: &reqwest::Client, acct: &Account) -> Result<String, ProviderError> {
        let key = Key::read(acct)?;
        self.0.get(key.cache_key(), || Self::fetch(http, key)).await
    }

    async fn fetch(http: &reqwest::Client, key: Key) -> Result<(String, Duration), ProviderError> {
        let assertion = key.assertion(k8s_openapi::jiff::Timestamp::now().as_second())?;
        let form = format!(
            "grant_type={}&assertion={assertion}",
            crate::oci::client::urlencode(JWT_BEARER)
        );
        let email = key.client_email.clone();
        bearer::oauth_token(http, &key.token_uri, form, |r| {
            format!(
                "token for {email}: HTTP {}: {}: {} (check the service account key: it may be disabled or deleted)",
                r.status,
                r.error,
                cloud::short(r.description)
            )
        })
        .await
    }
}
