//! Short-lived credentials: the pod's workload identity and assumed roles (issue #33).
//!
//! A provider that can act without long-lived keys turns an [`Exchange`] into [`Temporary`]
//! keys at its cloud's security token service (its own room says how). [`Sessions`] holds them
//! per identity and role, process-wide: fetched when first needed, handed out until two thirds
//! of their life has passed, then fetched again (one exchange at a time per identity, however
//! many objects ask), so no call is ever made with keys about to expire. The keys are held in
//! memory only: never logged, never written to status, Events or metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::account::{Account, ProviderError, auth_backoff};

/// What to exchange for temporary keys.
#[derive(Clone, Debug)]
pub enum Exchange {
    /// The operator pod's workload identity: the projected ServiceAccount token and the role
    /// the environment names, as the cloud's SDKs read them (`vars`: that environment).
    Workload { vars: BTreeMap<String, String> },
    /// A role assumed with `base`'s keys.
    Assume {
        base: Account,
        role: String,
        external_id: Option<String>,
        /// The session's name, as the cloud records it in its audit log.
        session: String,
        /// The cloud's variables (its STS endpoint override, its region).
        vars: BTreeMap<String, String>,
    },
}

/// Temporary keys, named as the provider's credentials Secret names them (with the session
/// token under the Secret's session key), and when they expire.
#[derive(Clone, Default)]
pub struct Temporary {
    pub secret: BTreeMap<String, Vec<u8>>,
    /// Seconds since the epoch; `None`: the cloud did not say (kept for [`DEFAULT_LIFE`]).
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Temporary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Temporary")
            .field("keys", &self.secret.keys().collect::<Vec<_>>())
            .field("expires", &self.expires)
            .finish()
    }
}

/// How long keys whose expiry the cloud did not state are used.
pub const DEFAULT_LIFE: Duration = Duration::from_secs(15 * 60);

/// Whether keys `age` old, which lived `life` when fetched, are fetched again now: after two
/// thirds of their life (20 min before the end of an hour's keys, 10 s before 30 s keys).
pub fn due(life: Duration, age: Duration) -> bool {
    age >= life.mul_f64(2.0 / 3.0)
}

/// A role session's name as an STS takes it: letters, digits and `allowed`, others as `-`, at
/// most `max` characters, at least 2.
pub fn session_name(s: &str, allowed: &str, max: usize) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || allowed.contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    while n.len() < 2 {
        n.push('-');
    }
    n
}

/// The environment variables `names`, as this process has them (empty values left out).
pub fn vars(names: &[&str]) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|n| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (n.to_string(), v))
        })
        .collect()
}

/// A token file's text (the kubelet rewrites it as the token rotates: read at each exchange).
pub fn read_token(path: &str, variable: &str) -> Result<String, ProviderError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            ProviderError::auth(format!(
                "workload identity: reading the token file {path} ({variable}): {e}"
            ))
        })
}

/// The `iss` and `aud` of a JWT, for messages that say which audience a cloud refused (the
/// token itself never appears; its signature is not checked here, the cloud checks it).
pub fn audience(jwt: &str) -> String {
    let claims = jwt
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let aud = match &claims["aud"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","),
        _ => "?".into(),
    };
    let iss = claims["iss"].as_str().unwrap_or("?");
    format!("audience {aud}, issuer {iss}")
}

/// One identity's keys and when they are due again, or its last refusal.
#[derive(Clone)]
enum Held {
    Keys {
        keys: Temporary,
        fetched: Instant,
        life: Duration,
    },
    /// The cloud refused the identity or the role: not asked again before `until` (as refused
    /// keys in a Secret wait, [`auth_backoff`]); a changed spec or environment is another key.
    Refused {
        until: Instant,
        failures: u32,
        error: ProviderError,
    },
}

type Cell = Arc<tokio::sync::Mutex<Option<Held>>>;

/// Temporary keys per identity, shared by every object of the process.
#[derive(Default)]
pub struct Sessions {
    cells: Mutex<HashMap<String, Cell>>,
}

impl Sessions {
    /// The keys held for `key`, or fresh ones from `fetch` when there are none or they are
    /// due; `counted` hears the outcome of each exchange made (`ok`, `refused`, `failed`).
    pub async fn get<F, Fut>(&self, key: &str, fetch: F, counted: impl Fn(&str)) -> Result<Temporary, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Temporary, ProviderError>>,
    {
        let cell = self
            .cells
            .lock()
            .expect("sessions")
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut held = cell.lock().await;
        let failures = match held.as_ref() {
            Some(Held::Keys { keys, fetched, life }) if !due(*life, fetched.elapsed()) => return Ok(keys.clone()),
            Some(Held::Refused { until, error, .. }) if Instant::now() < *until => return Err(error.clone()),
            Some(Held::Refused { failures, .. }) => *failures,
            _ => 0,
        };
        let r = fetch().await;
        match &r {
            Ok(keys) => {
                counted("ok");
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let life = keys
                    .expires
                    .map(|e| Duration::from_secs(e.saturating_sub(now).max(0) as u64))
                    .unwrap_or(DEFAULT_LIFE);
                *held = Some(Held::Keys {
                    keys: keys.clone(),
                    fetched: Instant::now(),
                    life,
                });
            }
            Err(e) if e.auth => {
                counted("refused");
                let failures = failures + 1;
                let wait = auth_backoff(failures);
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let at = k8s_openapi::jiff::Timestamp::from_second(now + wait.as_secs() as i64)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                let error = ProviderError {
                    message: format!(
                        "{} (refused {failures} time(s); asked again at {at}, or at once for other credentials in the spec)",
                        e.message
                    ),
                    ..e.clone()
                };
                *held = Some(Held::Refused {
                    until: Instant::now() + wait,
                    failures,
                    error: error.clone(),
                });
                return Err(error);
            }
            Err(_) => {
                counted("failed");
                *held = None;
            }
        }
        r
    }

    /// How many identities were asked for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.cells.lock().expect("sessions").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn keys_are_fetched_again_after_two_thirds_of_their_life() {
        let hour = Duration::from_secs(3600);
        for (life, age, again) in [
            (hour, Duration::ZERO, false),
            (hour, Duration::from_secs(39 * 60), false),
            (hour, Duration::from_secs(40 * 60), true),
            (Duration::from_secs(30), Duration::from_secs(19), false),
            (Duration::from_secs(30), Duration::from_secs(20), true),
            (Duration::ZERO, Duration::ZERO, true),
        ] {
            assert_eq!(due(life, age), again, "life {life:?}, age {age:?}");
        }
    }

    #[tokio::test]
    async fn one_exchange_serves_every_caller_until_due_and_a_refusal_waits() {
        let s = Sessions::default();
        let calls = AtomicU32::new(0);
        let far = k8s_openapi::jiff::Timestamp::now().as_second() + 3600;
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Temporary {
                secret: [("k".to_string(), b"v".to_vec())].into(),
                expires: Some(far),
            })
        };
        let counted = std::sync::Mutex::new(Vec::new());
        let count = |o: &str| counted.lock().unwrap().push(o.to_string());
        let (a, b) = tokio::join!(s.get("aws|workload", fetch, count), s.get("aws|workload", fetch, count));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "two callers at once, one exchange");
        // Keys that expire now are fetched again at once.
        let soon = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Temporary {
                secret: BTreeMap::new(),
                expires: Some(k8s_openapi::jiff::Timestamp::now().as_second()),
            })
        };
        s.get("other", soon, count).await.unwrap();
        s.get("other", soon, count).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A refusal is held (minutes), not asked again at every reconcile.
        let refused = || async { Err(ProviderError::auth("AccessDenied")) };
        let e = s.get("third", refused, count).await.unwrap_err();
        assert!(
            e.auth
                && e.message
                    .starts_with("AccessDenied (refused 1 time(s); asked again at "),
            "{e}"
        );
        let ok = || async { Ok(Temporary::default()) };
        assert_eq!(s.get("third", ok, count).await.unwrap_err(), e, "held, not asked");
        // A transient failure is not held.
        let failed = || async { Err(ProviderError::transient("503")) };
        assert!(s.get("fourth", failed, count).await.is_err());
        assert!(s.get("fourth", ok, count).await.is_ok());
        assert_eq!(*counted.lock().unwrap(), ["ok", "ok", "ok", "refused", "failed", "ok"]);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn the_audience_of_a_token_is_named_and_nothing_else() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"aud":["sts.amazonaws.com"],"iss":"https://oidc.example","sub":"system:serviceaccount:x:y"}"#)
        );
        assert_eq!(
            audience(&jwt),
            "audience sts.amazonaws.com, issuer https://oidc.example"
        );
        assert_eq!(audience("not-a-jwt"), "audience ?, issuer ?");
    }

    #[test]
    fn temporary_keys_never_show_in_debug_output() {
        let t = Temporary {
            secret: [("secretAccessKey".to_string(), b"very-secret".to_vec())].into(),
            expires: Some(1),
        };
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
