//! Azure Workload Identity, as `azure-identity`'s `WorkloadIdentityCredential` does it: the AKS
//! webhook (or the chart) gives the pod `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//! `AZURE_FEDERATED_TOKEN_FILE` (the ServiceAccount token projected with audience
//! `api://AzureADTokenExchange`) and `AZURE_AUTHORITY_HOST`; the token is the client assertion of
//! the client-credentials grant for the app registration whose federated credential trusts the
//! cluster's issuer. `AZURE_SUBSCRIPTION_ID` and `AZURE_RESOURCE_GROUP` (the latter this
//! operator's own) stand for the Secret's `subscriptionId` and `resourceGroup`.

use std::collections::BTreeMap;

use super::super::super::ProviderError;
use super::super::super::facts::Identity;
use super::entra;
use crate::cloud::identity::{self, Exchange, Temporary};

pub const IDENTITY: Identity = Identity {
    variables: &[
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_RESOURCE_GROUP",
    ],
    role_rule: "no role: Azure has no role to assume here; give the operator's identity (or the Secret's app) a role on the gallery instead",
    valid_role: |_| false,
    audience: "api://AzureADTokenExchange",
};

/// The pod's workload identity's token for Azure Resource Manager.
pub(super) async fn exchange(http: &reqwest::Client, how: &Exchange) -> Result<Temporary, ProviderError> {
    let Exchange::Workload { vars } = how else {
        return Err(ProviderError::permanent(IDENTITY.role_rule));
    };
    let need = |k: &str| {
        vars.get(k).cloned().ok_or_else(|| {
            ProviderError::auth(format!(
                "workload identity: {k} is not set (Azure Workload Identity's webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE)"
            ))
        })
    };
    let (client, tenant, file) = (
        need("AZURE_CLIENT_ID")?,
        need("AZURE_TENANT_ID")?,
        need("AZURE_FEDERATED_TOKEN_FILE")?,
    );
    let authority = vars
        .get("AZURE_AUTHORITY_HOST")
        .cloned()
        .unwrap_or_else(|| entra::AUTHORITY.into());
    let jwt = identity::read_token(&file, "AZURE_FEDERATED_TOKEN_FILE")?;
    let (token, life) = entra::fetch(http, &authority, &tenant, &client, entra::Grant::Assertion(&jwt))
        .await
        .map_err(|e| ProviderError {
            message: format!("{} ({})", e.message, identity::audience(&jwt)),
            ..e
        })?;
    let mut secret = BTreeMap::from([("accessToken".to_string(), token.into_bytes())]);
    for (var, key) in [
        ("AZURE_SUBSCRIPTION_ID", "subscriptionId"),
        ("AZURE_RESOURCE_GROUP", "resourceGroup"),
    ] {
        if let Some(v) = vars.get(var) {
            secret.insert(key.into(), v.clone().into_bytes());
        }
    }
    let expires = Some(k8s_openapi::jiff::Timestamp::now().as_second() + life.as_secs() as i64);
    Ok(Temporary { secret, expires })
}
