//! The signed-API clouds' shared plumbing (huawei, alibaba, aws, tencent CVM and TCR): one HTTP
//! client with API timeouts and the egress policy, endpoint templates, error classes, backoff on
//! throttling; [`sign`] signs their requests, [`xml`] reads EC2's answers, [`account`] holds the
//! account a call acts for and the error it returns.
//!
//! A throttled call (HTTP 429, or the provider's throttling error code) is retried here with
//! exponential backoff and jitter, honouring `Retry-After`, a few times within one provider
//! call; if the provider still throttles, the call fails as retryable and the engine's own
//! per-destination backoff takes over. Other errors are returned at once.

pub mod account;
pub mod bearer;
pub mod identity;
pub mod sign;
pub mod xml;

pub use account::{Account, ProviderError};

use std::future::Future;
use std::time::Duration;

use crate::egress::{self, Class};
use crate::oci::client::{RetryPolicy, parse_retry_after, tls_config};

/// Total time of one API call.
pub const API_TIMEOUT: Duration = Duration::from_secs(60);

/// One failed attempt of a call.
#[derive(Debug)]
pub struct Attempt {
    pub error: ProviderError,
    /// The provider asked us to slow down.
    pub throttled: bool,
    pub retry_after: Option<Duration>,
}

impl From<ProviderError> for Attempt {
    fn from(error: ProviderError) -> Self {
        Self {
            error,
            throttled: false,
            retry_after: None,
        }
    }
}

/// How a provider's error is handled: each provider's error codes map to one of these in one
/// table (`ERROR_CODES` in its module), tested against the codes its SDK or reference lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The provider asks us to slow down: back off within the call, then retry later.
    Throttled,
    /// A passing condition (busy, quota in use, internal error, state in transition).
    RetryLater,
    /// The named resource does not exist (a delete or cancel of it is done).
    NotFound,
    /// Credentials or permissions: fails at once, with a hint about what to check.
    Auth,
    /// Anything else: the request itself is wrong; fails at once.
    Permanent,
}

/// The most pages a paged listing reads (10,000 images at 100 a page): a listing that never
/// ends is cut there, not followed forever.
pub const MAX_PAGES: usize = 100;

/// Every page of a listing of `size` items a page: `page(read)` fetches the page after the
/// first `read` items (ECS: page number `read / size + 1`; CVM: offset `read`) and answers its
/// items and the listing's total. Stops at a short page, at the total, or at [`MAX_PAGES`].
pub async fn all_pages<T, F, Fut>(size: usize, mut page: F) -> Result<Vec<T>, ProviderError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, usize), ProviderError>>,
{
    let mut out = Vec::new();
    for _ in 0..MAX_PAGES {
        let (items, total) = page(out.len()).await?;
        let n = items.len();
        out.extend(items);
        if n < size || out.len() >= total {
            break;
        }
    }
    Ok(out)
}

/// The class of `code` in a provider's table: its exact entry, else the longest `prefix*` entry.
pub fn lookup(table: &[(&str, ErrorClass)], code: &str) -> Option<ErrorClass> {
    if code.is_empty() {
        return None;
    }
    table.iter().find(|(k, _)| *k == code).map(|(_, c)| *c).or_else(|| {
        table
            .iter()
            .filter_map(|(k, c)| k.strip_suffix('*').map(|p| (p, *c)))
            .filter(|(p, _)| code.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, c)| c)
    })
}

/// The class of an answer whose code no table names, by its HTTP status.
pub fn by_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::Throttled,
        404 => ErrorClass::NotFound,
        401 | 403 => ErrorClass::Auth,
        408 | 409 | 500..=599 => ErrorClass::RetryLater,
        _ => ErrorClass::Permanent,
    }
}

/// A UUID (version 4 in form) derived from `text`: the same text, the same UUID. Google's
/// `requestId` from our token; Azure's role assignment name from the image and the principal.
pub fn uuid_from(text: &str) -> String {
    use sha2::Digest as _;
    let h = crate::oci::api::hex(&sha2::Sha256::digest(text.as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A failed attempt of `class`; an authentication or permission error carries `auth_hint`.
pub fn attempt(class: ErrorClass, code: &str, text: String, auth_hint: &str, retry_after: Option<Duration>) -> Attempt {
    let error = match class {
        ErrorClass::NotFound => ProviderError::not_found(text),
        ErrorClass::Throttled | ErrorClass::RetryLater => ProviderError::transient(text),
        ErrorClass::Auth => ProviderError::auth(format!("{text} ({auth_hint})")),
        ErrorClass::Permanent => ProviderError::permanent(text),
    }
    .with_code(code);
    Attempt {
        error,
        throttled: class == ErrorClass::Throttled,
        retry_after,
    }
}

/// How throttled calls are retried: the registry client's [`RetryPolicy`] (exponential with
/// jitter), with the cloud APIs' attempts and bounds.
#[derive(Clone, Debug)]
pub struct Backoff(pub RetryPolicy);

impl Default for Backoff {
    fn default() -> Self {
        Self(RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        })
    }
}

impl Backoff {
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.map_or_else(|| self.0.delay(retry), |ra| ra.min(self.0.max_retry_after))
    }

    /// Run `call` until it succeeds, fails without throttling, or the attempts are used up.
    /// A `read` (a call that changes nothing: describe, list, show a job) is also tried again
    /// after a passing error (5xx, internal error, busy): a read that meets a passing fault
    /// must not fail the piece of work it serves (a copy's attempt, a share).
    pub async fn run<T, F, Fut>(&self, op: &str, read: bool, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut retry = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(a) if (a.throttled || (read && a.error.retryable)) && retry + 1 < self.0.max_attempts => {
                    let d = self.delay(retry, a.retry_after);
                    tracing::info!(op, delay_ms = d.as_millis() as u64, error = %a.error, "throttled; backing off");
                    tokio::time::sleep(d).await;
                    retry += 1;
                }
                Err(a) if a.throttled => {
                    return Err(ProviderError::transient(format!(
                        "{} (still throttled after {} attempts)",
                        a.error.message, self.0.max_attempts
                    )));
                }
                Err(a) => return Err(a.error),
            }
        }
    }
}

/// The HTTP client the cloud providers use.
pub fn client() -> reqwest::Client {
    let tls = tls_config(None).expect("TLS with the system roots");
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(API_TIMEOUT);
    egress::guard(builder, Class::Cloud, 5).build().expect("HTTP client")
}

/// The HTTP client for a credentials agent on the node (EKS Pod Identity's link-local
/// address), which the pod's environment names: outside the egress policy, which governs the
/// URLs specs and Secrets name.
pub fn agent_client() -> reqwest::Client {
    let tls = tls_config(None).expect("TLS with the system roots");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// An HTTP answer: status, `Retry-After`, body.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub text: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Send a request and read its whole (small) answer; transport failures are retryable.
/// The egress policy is asked first: a refused URL is a permanent error and nothing is sent.
pub async fn exchange(op: &str, rb: reqwest::RequestBuilder) -> Result<Answer, Attempt> {
    let (client, req) = rb.build_split();
    let req = req.map_err(|e| transport(op, e))?;
    allowed(op, req.url().as_str())?;
    let resp = client.execute(req).await.map_err(|e| transport(op, e))?;
    let status = resp.status().as_u16();
    let retry_after = retry_after(&resp);
    let text = resp.text().await.map_err(|e| transport(op, e))?;
    Ok(Answer {
        status,
        retry_after,
        text,
    })
}

/// `Retry-After` of a response, if any.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// An endpoint for a region: the override (`{region}` replaced) or the provider's default
/// template. No trailing slash.
pub fn endpoint(override_: Option<&str>, default_template: &str, region: &str) -> String {
    override_
        .unwrap_or(default_template)
        .replace("{region}", region)
        .trim_end_matches('/')
        .to_string()
}

/// `host[:port]` of a URL, as signed in the `Host` header (default ports left out).
pub fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// A transport failure, without the URL (which may carry signed query parameters).
pub fn transport(op: &str, e: reqwest::Error) -> Attempt {
    transport_error(op, e).into()
}

/// A failed exchange as a provider error: permanent when the egress policy refused it (a
/// redirect or a resolved address), else retryable.
pub fn transport_error(op: &str, e: reqwest::Error) -> ProviderError {
    match egress::refusal_in(&e) {
        Some(r) => ProviderError::permanent(format!("{op}: {r}")),
        None => ProviderError::transient(format!("{op}: {}", crate::oci::client::without_url(&e))),
    }
}

/// The egress policy's verdict on a cloud URL, before anything is sent: a refusal is permanent.
pub fn allowed(op: &str, url: &str) -> Result<(), ProviderError> {
    egress::current()
        .check_url(Class::Cloud, url)
        .map_err(|r| ProviderError::permanent(format!("{op}: {r}")))
}

/// The one image a describe matched: none is not found, several is ambiguous (their ids listed).
pub fn exactly_one<T>(
    service: &str,
    region: &str,
    wanted: &str,
    mut found: Vec<(String, T)>,
) -> Result<T, ProviderError> {
    match found.len() {
        1 => Ok(found.remove(0).1),
        0 => Err(ProviderError::not_found(format!(
            "{service} in {region} has no image {wanted}"
        ))),
        n => Err(ProviderError::permanent(format!(
            "image name {wanted} is ambiguous in {region}: {n} images ({}); use source.imageId",
            found.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A delete or cancel: an absent target is success.
pub fn gone_is_ok<T>(r: Result<T, ProviderError>) -> Result<(), ProviderError> {
    match r {
        Err(e) if !e.not_found => Err(e),
        _ => Ok(()),
    }
}

/// A remote error body as one line of text: an HTML page (Glance's and many proxies' error
/// pages) loses its head and tags, and whitespace runs become one space; other text is kept.
pub fn plain(body: &str) -> String {
    let t = body.trim();
    let html = t.starts_with('<') || t.contains("<html") || t.contains("<body");
    if !html {
        return t.to_string();
    }
    let lower = t.to_ascii_lowercase();
    let mut text = String::with_capacity(t.len());
    // Drop <head>...</head> (its title repeats the body's heading).
    let mut src = String::new();
    if let (Some(a), Some(b)) = (lower.find("<head"), lower.find("</head>")) {
        src.push_str(&t[..a]);
        src.push_str(&t[b + "</head>".len()..]);
    } else {
        src.push_str(t);
    }
    let mut in_tag = false;
    for c in src.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Remote text for a message: [`plain`], at most 300 characters.
pub fn short(s: &str) -> String {
    let s = plain(s);
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {

    /// Glance's 403 page, as a delete of a protected image answers it: one clean line.
    #[test]
    fn html_error_pages_become_one_line() {
        let page = "<html>\n <head>\n  <title>403 Forbidden</title>\n </head>\n <body>\n  <h1>403 Forbidden</h1>\n  Image abc is protected and cannot be deleted.<br /><br />\n\n\n\n </body>\n</html>";
        assert_eq!(
            short(page),
            "403 Forbidden Image abc is protected and cannot be deleted."
        );
        assert_eq!(short("  {\"code\": 1}\n"), "{\"code\": 1}");
        assert_eq!(short(&"x".repeat(400)).chars().count(), 301);
    }
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn throttled_calls_back_off_then_give_up_as_retryable() {
        let b = Backoff(RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retry_after: Duration::from_millis(5),
        });
        let n = AtomicU32::new(0);
        let r: Result<(), _> = b
            .run("op", false, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(Attempt {
                    error: ProviderError::transient("Throttling"),
                    throttled: true,
                    retry_after: None,
                })
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
        let e = r.unwrap_err();
        assert!(
            e.retryable && e.message.contains("still throttled after 3 attempts"),
            "{e:?}"
        );

        let n = AtomicU32::new(0);
        let r = b
            .run("op", false, || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Attempt {
                        error: ProviderError::transient("slow down"),
                        throttled: true,
                        retry_after: Some(Duration::from_millis(1)),
                    })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);

        let n = AtomicU32::new(0);
        let r: Result<(), _> = b
            .run("op", false, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::permanent("denied").into())
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!r.unwrap_err().retryable);

        // A passing server error: a read is tried again within the call, a write is not (it
        // may have been done; its caller decides).
        for (read, calls) in [(true, 2), (false, 1)] {
            let n = AtomicU32::new(0);
            let r = b
                .run("op", read, || async {
                    if n.fetch_add(1, Ordering::SeqCst) < 1 {
                        Err(ProviderError::transient("HTTP 503").into())
                    } else {
                        Ok(7)
                    }
                })
                .await;
            assert_eq!(n.load(Ordering::SeqCst), calls, "read {read}");
            assert_eq!(r.is_ok(), read, "read {read}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint(None, "https://ecs.{region}.aliyuncs.com", "cn-hangzhou"),
            "https://ecs.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            endpoint(Some("http://127.0.0.1:9/"), "https://x.{region}", "r"),
            "http://127.0.0.1:9"
        );
        let u = reqwest::Url::parse("http://127.0.0.1:8080/a").unwrap();
        assert_eq!(host_of(&u), "127.0.0.1:8080");
        let u = reqwest::Url::parse("https://ec2.us-east-1.amazonaws.com/").unwrap();
        assert_eq!(host_of(&u), "ec2.us-east-1.amazonaws.com");
    }
}
