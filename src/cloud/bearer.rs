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
