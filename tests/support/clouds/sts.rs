//! A security token service beside each cloud stand-in (issue #33): it trusts the roles a test
//! names, checks a web identity token's issuer, audience and expiry (the JWT the real API
//! server issued; its signature is the cloud's business and is not checked here), hands out
//! short-lived keys with a session token that expire after [`Sts::life`], and the cloud's
//! signature check then accepts those keys only with their token, signed, and not expired.

use std::time::{Duration, Instant};

use base64::Engine as _;

/// A role the service lets a caller assume.
#[derive(Clone, Debug)]
pub struct Role {
    pub arn: String,
    /// The account the role is in (its keys act there).
    pub account: String,
    /// Who may assume it: `None`, a web identity token of the service's issuer and audience;
    /// `Some(account)`, keys of that account (AssumeRole).
    pub from: Option<String>,
    /// The external id its trust policy asks for.
    pub external_id: Option<String>,
}

/// Keys the service handed out.
#[derive(Clone, Debug)]
pub struct Session {
    pub ak: String,
    pub sk: String,
    pub token: String,
    pub account: String,
    pub role: String,
    pub expires: Instant,
    /// Wall-clock expiry (Unix seconds), as the answer states it.
    pub expires_unix: i64,
}

#[derive(Debug)]
pub struct Sts {
    pub issuer: String,
    pub audience: String,
    pub roles: Vec<Role>,
    /// How long handed-out keys live.
    pub life: Duration,
    pub sessions: Vec<Session>,
    /// Calls made with handed-out keys after they expired.
    pub expired_calls: u32,
    seq: u32,
}

impl Default for Sts {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            roles: Vec::new(),
            life: Duration::from_secs(3600),
            sessions: Vec::new(),
            expired_calls: 0,
            seq: 0,
        }
    }
}

/// Why an exchange was refused: (code, message).
pub type Refusal = (&'static str, String);

impl Sts {
    /// Keys for `role`, when a web identity token may assume it.
    pub fn web_identity(&mut self, role: &str, jwt: &str) -> Result<Session, Refusal> {
        let claims = claims(jwt).ok_or(("InvalidIdentityToken", "The token is not a JWT.".to_string()))?;
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(s) => *s == self.audience,
            serde_json::Value::Array(a) => a.iter().any(|v| v.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err((
                "InvalidIdentityToken",
                "No OpenIDConnect provider found in your account for this issuer.".into(),
            ));
        }
        if !aud_ok {
            return Err(("InvalidIdentityToken", "Incorrect token audience".into()));
        }
        if claims["exp"].as_i64().is_none_or(|e| e < super::now_unix()) {
            return Err(("ExpiredTokenException", "Token expired".into()));
        }
        let r = self
            .roles
            .iter()
            .find(|r| r.arn == role && r.from.is_none())
            .cloned()
            .ok_or((
                "AccessDenied",
                "Not authorized to perform sts:AssumeRoleWithWebIdentity".to_string(),
            ))?;
        Ok(self.issue(&r))
    }

    /// Keys for `role`, assumed by keys of `caller`.
    pub fn assume(&mut self, caller: &str, role: &str, external_id: Option<&str>) -> Result<Session, Refusal> {
        let r = self
            .roles
            .iter()
            .find(|r| r.arn == role && r.from.as_deref() == Some(caller) && r.external_id.as_deref() == external_id)
            .cloned()
            .ok_or((
                "AccessDenied",
                format!("User: arn:aws:iam::{caller}:user/x is not authorized to perform: sts:AssumeRole on resource: {role}"),
            ))?;
        Ok(self.issue(&r))
    }

    fn issue(&mut self, r: &Role) -> Session {
        self.seq += 1;
        let s = Session {
            ak: format!("ASIATEMP{:08}", self.seq),
            sk: format!("temp/secret+{}=", self.seq),
            token: format!("FwoGZXIvYXdzE-session-{}-{}", self.seq, r.account),
            account: r.account.clone(),
            role: r.arn.clone(),
            expires: Instant::now() + self.life,
            expires_unix: super::now_unix() + self.life.as_secs() as i64,
        };
        self.sessions.push(s.clone());
        s
    }

    /// The session of handed-out access key `ak`.
    pub fn session(&self, ak: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.ak == ak)
    }
}

/// The claims of a JWT (unverified).
pub fn claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
