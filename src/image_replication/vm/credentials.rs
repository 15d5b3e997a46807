//! The account an object acts for, read once per reconcile: a Secret's keys, or short-lived
//! keys of the operator pod's workload identity, either of them turned into a role's keys when
//! the spec names one (`assumeRole`). Short-lived keys come from the process's
//! [`Sessions`](crate::cloud::identity::Sessions), so every object on the same identity and
//! role shares one exchange until its keys are due again.

use crate::api::v1alpha1::{AssumeRoleSpec, ImageReplication, OwnerSpec, SecretRef};
use crate::cloud::identity::{self, Exchange, Temporary};
use crate::controller::secrets::Secrets;

use super::engine::VmEngine;
use super::providers;
use super::{Account, ImageService, ProviderError};

/// Where an account's keys come from: a Secret of the object's namespace, else the pod's
/// workload identity; then, when named, a role assumed with them.
pub struct Source<'a> {
    pub secret: Option<&'a SecretRef>,
    pub role: Option<&'a AssumeRoleSpec>,
}

impl<'a> Source<'a> {
    /// The provider's own account.
    pub fn provider(obj: &'a ImageReplication) -> Self {
        Self {
            secret: obj.spec.provider.credentials_secret_ref.as_ref(),
            role: obj.spec.provider.assume_role.as_ref(),
        }
    }
}

/// Reads accounts for one object.
pub struct Reader<'a> {
    pub obj: &'a ImageReplication,
    pub secrets: &'a dyn Secrets,
    pub service: &'a dyn ImageService,
    pub engine: &'a VmEngine,
}

impl Reader<'_> {
    fn namespace(&self) -> String {
        self.obj.metadata.namespace.clone().unwrap_or_default()
    }

    fn account(&self, secret: std::collections::BTreeMap<String, Vec<u8>>, identity: Option<String>) -> Account {
        Account {
            secret,
            endpoint: self.obj.spec.provider.endpoint.clone(),
            agency: self.obj.spec.provider.agency.clone(),
            identity,
        }
    }

    /// The account `source` describes.
    pub async fn read(&self, source: &Source<'_>) -> Result<Account, ProviderError> {
        let base = match source.secret {
            Some(r) => self
                .secrets
                .data(&self.namespace(), &r.name)
                .await
                .map(|s| self.account(s, None))
                .map_err(ProviderError::transient)?,
            None => self.workload().await?,
        };
        match source.role {
            Some(role) => self.assume(base, source.secret, role).await,
            None => Ok(base),
        }
    }

    /// The account of a destination's owner (`destinations[].account`), or of a member that
    /// accepts a share (`acceptWith`, as an owner): its Secret, or a role of it assumed with
    /// its Secret or else with the provider's own account (`provider`, read once already).
    pub async fn owner(
        &self,
        owner: &OwnerSpec,
        provider: &Result<Account, ProviderError>,
    ) -> Result<Account, ProviderError> {
        if owner.credentials_secret_ref.is_some() {
            return self
                .read(&Source {
                    secret: owner.credentials_secret_ref.as_ref(),
                    role: owner.assume_role.as_ref(),
                })
                .await;
        }
        let Some(role) = &owner.assume_role else {
            return Err(ProviderError::permanent(
                "destinations[].account needs credentialsSecretRef or assumeRole",
            ));
        };
        let base = provider.clone()?;
        self.assume(base, self.obj.spec.provider.credentials_secret_ref.as_ref(), role)
            .await
    }

    fn vars(&self) -> std::collections::BTreeMap<String, String> {
        providers::cloud(self.service.kind())
            .and_then(|c| c.identity)
            .map(|i| identity::vars(i.variables))
            .unwrap_or_default()
    }

    /// The keys of `how`, from the process's sessions (one exchange per `key` until due); an
    /// error says `what` was refused.
    async fn exchange(&self, key: &str, how: &Exchange, what: String) -> Result<Temporary, ProviderError> {
        let kind = self.service.kind();
        self.engine
            .sessions
            .get(key, || self.service.exchange(how), |o| self.engine.exchanged(kind, o))
            .await
            .map_err(|e| ProviderError {
                message: format!("{what}: {}", e.message),
                ..e
            })
    }

    /// The pod's workload identity, as this cloud's SDKs find it in the environment.
    async fn workload(&self) -> Result<Account, ProviderError> {
        let kind = self.service.kind();
        if providers::cloud(kind).and_then(|c| c.identity).is_none() {
            return Err(super::no_identity(kind));
        }
        let vars = self.vars();
        let key = format!("{}|workload|{vars:?}", kind.as_str());
        let how = Exchange::Workload { vars };
        let keys = self
            .exchange(&key, &how, "the operator's workload identity".into())
            .await?;
        Ok(self.account(keys.secret, Some("the operator's workload identity".into())))
    }

    /// `role`, assumed with `base`'s keys (from `secret`, or the workload identity). The
    /// session is named after the object's namespace, so the cloud's audit log says whose.
    async fn assume(
        &self,
        base: Account,
        secret: Option<&SecretRef>,
        role: &AssumeRoleSpec,
    ) -> Result<Account, ProviderError> {
        let kind = self.service.kind();
        let ns = self.namespace();
        let beneath = match (&base.identity, secret) {
            (Some(i), _) => i.clone(),
            (None, Some(s)) => format!("Secret {ns}/{} {}", s.name, super::engine::fingerprint(&base)),
            (None, None) => String::new(),
        };
        let key = format!(
            "{}|{beneath}|{}|{}|{ns}",
            kind.as_str(),
            role.role_arn,
            role.external_id.as_deref().unwrap_or("")
        );
        let how = Exchange::Assume {
            base: base.clone(),
            role: role.role_arn.clone(),
            external_id: role.external_id.clone(),
            session: format!("imgrep-{ns}"),
            vars: self.vars(),
        };
        let via = match secret {
            Some(s) => format!("Secret {}", s.name),
            None => base.identity.clone().unwrap_or_default(),
        };
        let keys = self
            .exchange(&key, &how, format!("assuming role {} with {via}", role.role_arn))
            .await?;
        Ok(Account {
            identity: Some(format!("role {} (assumed with {via})", role.role_arn)),
            ..self.account(keys.secret, None)
        })
    }
}
