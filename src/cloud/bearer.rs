//! Bearer tokens kept per credential (a service account key, an app registration):
//! asked for when first needed, handed out until they are due (five minutes, at most a third of
//! their life, before they expire), then asked for again — one request at a time per credential,
//! however many calls need it. Held in memory only.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::account::ProviderError;

/// A token is renewed this long before it expires (at most a third of its life).
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// One credential's token and when it is renewed; locked while it is asked for.
type Cell = Arc<tokio::sync::Mutex<Option<(String, Instant)>>>;

#[derive(Default)]
pub struct Tokens {
    cells: Mutex<HashMap<String, Cell>>,
}

impl Tokens {
    /// The token of credential `key` (what it is known by: never the secret itself), from
    /// `fetch` (the token and its life) when there is none or it is due.
    pub async fn get<F>(&self, key: String, fetch: impl FnOnce() -> F) -> Result<String, ProviderError>
    where
        F: Future<Output = Result<(String, Duration), ProviderError>>,
    {
        let cell = self.cells.lock().expect("tokens").entry(key).or_default().clone();
        let mut kept = cell.lock().await;
        if let Some((t, renew)) = &*kept
            && Instant::now() < *renew
        {
            return Ok(t.clone());
        }
        let (token, life) = fetch().await?;
        *kept = Some((token.clone(), Instant::now() + life - RENEW_BEFORE.min(life / 3)));
        Ok(token)
    }
}

/// A token endpoint's refusal: its HTTP status, `error` and `error_description` (RFC 6749 5.2).
pub struct Refusal<'a> {
    pub status: u16,
    pub error: &'a str,
    pub description: &'a str,
}

/// A refusal's error: the credential's (held, `CredentialsRefused`) for a 4xx other than 429,
/// else passing.
pub fn refused(status: u16, text: String) -> ProviderError {
    if (400..500).contains(&status) && status != 429 {
        ProviderError::auth(text)
    } else {
        ProviderError::transient(text)
    }
}

/// POST `form` (urlencoded) to an OAuth2 token endpoint: its `access_token` and life
/// (`expires_in`, an hour when unsaid), or the refusal as `says` puts it.
pub async fn oauth_token(
    http: &reqwest::Client,
    url: &str,
    form: String,
    says: impl FnOnce(Refusal<'_>) -> String,
) -> Result<(String, Duration), ProviderError> {
    let rb = http
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form);
    let a = super::exchange("token", rb).await.map_err(|e| e.error)?;
    let v: serde_json::Value = serde_json::from_str(&a.text).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    match (a.status, v.get("access_token").and_then(serde_json::Value::as_str)) {
        (200, Some(t)) => {
            let life = v.get("expires_in").and_then(serde_json::Value::as_u64).unwrap_or(3600);
            Ok((t.to_string(), Duration::from_secs(life)))
        }
        (status, _) => Err(refused(
            status,
            says(Refusal {
                status,
                error: text("error"),
                description: text("error_description"),
            }),
        )),
    }
}

/// One JSON call with a bearer token.
pub struct JsonCall<'a> {
    pub op: &'a str,
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub body: Option<serde_json::Value>,
    /// A passing server error is retried within the call (a read, or an idempotent write).
    pub retry: bool,
}

/// Make `call` with the token `token` gives at each attempt (a renewed one is picked up),
/// throttling and passing errors backed off as `backoff` says; a non-2xx answer is classified by
/// `error` (op, status, body, Retry-After), an empty 2xx answer (202, 204) is `Null`.
pub async fn json_call<T, TF>(
    http: &reqwest::Client,
    backoff: &super::Backoff,
    call: JsonCall<'_>,
    token: T,
    error: fn(&str, u16, &str, Option<Duration>) -> super::Attempt,
) -> Result<serde_json::Value, ProviderError>
where
    T: Fn() -> TF,
    TF: Future<Output = Result<String, ProviderError>>,
{
    let JsonCall {
        op,
        method,
        url,
        body,
        retry,
    } = call;
    backoff
        .run(op, retry, || {
            let (url, method, body, token) = (&url, method.clone(), &body, &token);
            async move {
                let mut rb = http.request(method, url.clone()).bearer_auth(token().await?);
                if let Some(b) = body {
                    rb = rb.header("Content-Type", "application/json").body(b.to_string());
                }
                let a = super::exchange(op, rb).await?;
                if !(200..300).contains(&a.status) {
                    return Err(error(op, a.status, &a.text, a.retry_after));
                }
                if a.text.trim().is_empty() {
                    return Ok(serde_json::Value::Null);
                }
                serde_json::from_str(&a.text).map_err(|_| {
                    super::Attempt::from(ProviderError::transient(format!(
                        "{op}: HTTP {}: {}",
                        a.status,
                        super::short(&a.text)
                    )))
                })
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_kept_until_due_and_asked_for_once_at_a_time() {
        let t = Arc::new(Tokens::default());
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let fetch = |life: u64| {
            let asked = asked.clone();
            move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok((format!("t{n}"), Duration::from_secs(life)))
            }
        };
        let (a, b) = tokio::join!(t.get("k".into(), fetch(3600)), t.get("k".into(), fetch(3600)));
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            ("t0".to_string(), "t0".to_string()),
            "one request for both"
        );
        assert_eq!(
            t.get("other".into(), fetch(3600)).await.unwrap(),
            "t1",
            "another credential, its own"
        );
        // A token of 3 s is due after 2 s; one of 0 s at once.
        assert_eq!(t.get("short".into(), fetch(0)).await.unwrap(), "t2");
        assert_eq!(t.get("short".into(), fetch(0)).await.unwrap(), "t3");
    }
}
