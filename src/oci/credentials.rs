//! Registry credentials as a Secret holds them.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;

use crate::oci::Credentials;

/// Credentials from a Secret: `username`/`password`/`ca.crt` for every registry, and/or a
/// `.dockerconfigjson` with per-registry `auths`.
#[derive(Clone, Debug, Default)]
pub struct SecretCredentials {
    default: Credentials,
    per_host: HashMap<String, Credentials>,
}

impl SecretCredentials {
    /// Parse the data of a Secret (values already base64-decoded).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).trim_end_matches('\n').to_string())
        };
        let default = Credentials {
            username: text("username"),
            password: text("password"),
            ca_pem: data.get("ca.crt").cloned(),
        };
        let mut per_host = HashMap::new();
        if let Some(raw) = data.get(".dockerconfigjson") {
            let v: serde_json::Value =
                serde_json::from_slice(raw).map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
            for (host, entry) in v.get("auths").and_then(|a| a.as_object()).into_iter().flatten() {
                let host = host
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                let (mut u, mut p) = (
                    entry.get("username").and_then(|x| x.as_str()).map(String::from),
                    entry.get("password").and_then(|x| x.as_str()).map(String::from),
                );
                if let Some(auth) = entry.get("auth").and_then(|x| x.as_str()) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth)
                        .map_err(|_| format!(".dockerconfigjson auth for {host} is not base64"))?;
                    let s = String::from_utf8_lossy(&decoded).to_string();
                    if let Some((a, b)) = s.split_once(':') {
                        u = Some(a.to_string());
                        p = Some(b.to_string());
                    }
                }
                per_host.insert(
                    host,
                    Credentials {
                        username: u,
                        password: p,
                        ca_pem: default.ca_pem.clone(),
                    },
                );
            }
        }
        Ok(Self { default, per_host })
    }

    /// The credentials to use for a registry host.
    pub fn for_host(&self, host: &str) -> Credentials {
        self.per_host.get(host).cloned().unwrap_or_else(|| self.default.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_credentials() {
        let mut data = BTreeMap::new();
        data.insert("username".to_string(), b"robot".to_vec());
        data.insert("password".to_string(), b"pw\n".to_vec());
        let auth = base64::engine::general_purpose::STANDARD.encode("u2:p2");
        data.insert(
            ".dockerconfigjson".to_string(),
            format!(r#"{{"auths":{{"https://reg.example.com":{{"auth":"{auth}"}}}}}}"#).into_bytes(),
        );
        let c = SecretCredentials::from_data(&data).unwrap();
        assert_eq!(c.for_host("reg.example.com").username.as_deref(), Some("u2"));
        assert_eq!(c.for_host("reg.example.com").password.as_deref(), Some("p2"));
        assert_eq!(c.for_host("other:5000").password.as_deref(), Some("pw"));
    }
}
