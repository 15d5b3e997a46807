//! A Microsoft Entra ID access token for Azure Resource Manager, as `azure-identity`'s
//! `ClientSecretCredential` gets one: the OAuth2 client-credentials grant at
//! `<authority>/<tenantId>/oauth2/v2.0/token` with the app registration's `clientId` and
//! `clientSecret`, scope `https://management.azure.com/.default`. Tokens are kept per app and
//! renewed five minutes (at most a third of their life) before they expire, one request at a
//! time per app.

use std::time::Duration;

use super::super::super::{Account, ProviderError};
use crate::cloud::bearer;

/// Entra ID's public cloud authority (the Secret's `authorityHost` names another).
pub const AUTHORITY: &str = "https://login.microsoftonline.com";
pub const SCOPE: &str = "https://management.azure.com/.default";

/// Access tokens per app registration.
#[derive(Default)]
pub struct Tokens(crate::cloud::bearer::Tokens);

impl Tokens {
    pub async fn get(&self, http: &reqwest::Client, acct: &Account) -> Result<String, ProviderError> {
        let (Some(tenant), Some(client), Some(secret)) =
            (acct.text("tenantId"), acct.text("clientId"), acct.text("clientSecret"))
        else {
            return Err(ProviderError::permanent(
                "the credentials Secret needs tenantId, clientId and clientSecret (an app registration) and subscriptionId",
            ));
        };
        let authority = acct.text("authorityHost").unwrap_or_else(|| AUTHORITY.into());
        // Known by its app and a digest of its secret (a new secret is a new token).
        let id = {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(secret.as_bytes());
            format!("{authority}|{tenant}|{client}|{}", &crate::oci::api::hex(&h)[..16])
        };
        self.0
            .get(id, || fetch(http, &authority, &tenant, &client, Grant::Secret(&secret)))
            .await
    }
}

/// What proves the app: its client secret, or a federated token (workload identity).
pub enum Grant<'a> {
    Secret(&'a str),
    Assertion(&'a str),
}

/// The client-credentials grant.
pub async fn fetch(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    client: &str,
    grant: Grant<'_>,
) -> Result<(String, Duration), ProviderError> {
    let enc = crate::oci::client::urlencode;
    let proof = match grant {
        Grant::Secret(s) => format!("client_secret={}", enc(s)),
        Grant::Assertion(jwt) => format!(
            "client_assertion={}&client_assertion_type={}",
            enc(jwt),
            enc("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        ),
    };
    let form = format!(
        "client_id={}&{proof}&grant_type=client_credentials&scope={}",
        enc(client),
        enc(SCOPE)
    );
    let url = format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/'));
    bearer::oauth_token(http, &url, form, |r| {
        // AADSTS codes lead the description; the rest can echo request details.
        let aadsts = r.description.split(':').next().unwrap_or("");
        format!(
            "token for app {client} in tenant {tenant}: HTTP {} {} {aadsts} (check the client secret or the app's federated credential: it may be expired, or the app not in the tenant)",
            r.status, r.error
        )
    })
    .await
}
