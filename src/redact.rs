//! Text from remote answers on its way to status and Events: bounded in size and stripped of
//! anything that looks like a credential.
//!
//! Error messages carry what registries and clouds answered, and an answer can repeat what was
//! sent (an `Authorization` header, a token in a URL, a signed query string) or be megabytes
//! long. Every status `message` and every Event note passes through [`message`]; it is
//! idempotent, so a status planned twice compares equal and is not rewritten.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest message kept, in bytes (Kubernetes allows 32 KiB per condition message; a person
/// reads far less).
pub const MAX_MESSAGE: usize = 1024;

const REDACTED: &str = "[redacted]";

struct Rule {
    re: Regex,
    with: &'static str,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |re: &str, with: &'static str| Rule {
        re: Regex::new(re).expect("redaction pattern"),
        with,
    };
    vec![
        // Credential headers, as `Name: value` or `Name=value`.
        rule(
            r"(?i)\b(authorization|proxy-authorization|x-auth-token|x-subject-token|x-amz-security-token|x-acs-security-token|x-security-token|x-tc-token|cookie|set-cookie)(\s*[:=]\s*)[^\r\n,;]+",
            "$1$2[redacted]",
        ),
        // Auth schemes with their credential (one that has a digit or a symbol, so that words
        // such as "basic credentials" stay).
        rule(
            r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{3,}[0-9._~+/=-][A-Za-z0-9._~+/=-]*",
            "$1$2[redacted]",
        ),
        // user:password@ in URLs.
        rule(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@", "$1[redacted]@"),
        // Parameters whose name says credential: `name=value` (query strings, forms) and
        // `"name": "value"` (JSON).
        rule(
            r#"(?i)((?:^|[?&;\s{,(])(?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|credential|securitytoken|security_token|security-token|access_token|id_token|refresh_token|token|password|passwd|client_secret|secret|secretkey|secret_key|secretid|secret_id|secretaccesskey|accesskeysecret|accesskeyid|access_key|api_key|apikey|sig)=)[^&\s"',;})]+"#,
            "${1}[redacted]",
        ),
        rule(
            r#"(?i)(["'](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|credential|securitytoken|security_token|security-token|access_token|id_token|refresh_token|token|password|passwd|client_secret|secret|secretkey|secret_key|secretid|secret_id|secretaccesskey|accesskeysecret|accesskeyid|access_key|api_key|apikey|sig)["']\s*:\s*["'])[^"']*"#,
            "${1}[redacted]",
        ),
        // AWS access key ids and JSON web tokens, wherever they stand.
        rule(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", REDACTED),
        rule(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", REDACTED),
    ]
});

/// Redact credentials, then bound to [`MAX_MESSAGE`] bytes (cut at a character boundary).
/// Repeated until nothing changes, so that a cut inside a redacted value cannot leave text a
/// second pass would change.
pub fn message(s: &str) -> String {
    let mut out = bound(redact(s));
    for _ in 0..8 {
        let again = bound(redact(&out));
        if again == out {
            break;
        }
        out = again;
    }
    out
}

fn redact(s: &str) -> String {
    let mut out = s.to_string();
    for r in RULES.iter() {
        if r.re.is_match(&out) {
            out = r.re.replace_all(&out, r.with).into_owned();
        }
    }
    out
}

const CUT: &str = " … (cut)";

fn bound(mut s: String) -> String {
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let mut end = MAX_MESSAGE - CUT.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT);
    s
}

/// Every string under a `message` key of a status, through [`message`].
pub fn status<S: Serialize + DeserializeOwned>(s: S) -> S {
    let Ok(mut v) = serde_json::to_value(&s) else { return s };
    let mut changed = false;
    walk(&mut v, false, &mut changed);
    if !changed {
        return s;
    }
    serde_json::from_value(v).unwrap_or(s)
}

fn walk(v: &mut serde_json::Value, is_message: bool, changed: &mut bool) {
    match v {
        serde_json::Value::String(text) if is_message => {
            let clean = message(text);
            if clean != *text {
                *text = clean;
                *changed = true;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, is_message, changed)),
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                walk(item, k == "message", changed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let table = [
            ("Authorization: Bearer abc.def.ghi-123456", "Authorization: [redacted]"),
            (
                "sent authorization=Basic dXNlcjpwYXNz, got 401",
                "sent authorization=[redacted], got 401",
            ),
            (
                "token endpoint said: bearer abcdefgh12345678 expired",
                "token endpoint said: bearer [redacted] expired",
            ),
            (
                "GET https://user:s3cr3t@registry.example.com/v2/ failed",
                "GET https://[redacted]@registry.example.com/v2/ failed",
            ),
            (
                "redirect to https://bucket.s3.amazonaws.com/blob?X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F2026&X-Amz-Signature=deadbeef&x=1",
                "redirect to https://bucket.s3.amazonaws.com/blob?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]&x=1",
            ),
            (
                r#"{"password": "hunter2", "user": "u"}"#,
                r#"{"password": "[redacted]", "user": "u"}"#,
            ),
            (
                "realm?service=r&token=abc123&scope=x",
                "realm?service=r&token=[redacted]&scope=x",
            ),
            ("key AKIAIOSFODNN7EXAMPLE is unknown", "key [redacted] is unknown"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-part_1 rejected",
                "jwt [redacted] rejected",
            ),
            (
                "SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3 not found",
                "SecretId=[redacted] not found",
            ),
        ];
        for (input, want) in table {
            assert_eq!(message(input), want, "{input}");
        }
    }

    #[test]
    fn ordinary_messages_are_left_alone() {
        for m in [
            "copy_cn-north-4_web in cn-east-3 is active (IMS job 8a1b)",
            "GET http://127.0.0.1:5000/v2/team/web/manifests/1.4: HTTP 404: MANIFEST_UNKNOWN manifest unknown",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "the token expired; a new one is requested",
            "",
        ] {
            assert_eq!(message(m), m);
        }
    }

    #[test]
    fn long_text_is_bounded_at_a_character_boundary_and_idempotent() {
        let long = "é".repeat(5000);
        let once = message(&long);
        assert!(once.len() <= MAX_MESSAGE, "{}", once.len());
        assert!(once.ends_with(CUT));
        assert_eq!(message(&once), once, "bounding twice changes nothing");
        let secret = format!("{} Authorization: Bearer zzzzzzzzzzzz", "x".repeat(2000));
        assert_eq!(message(&message(&secret)), message(&secret));
    }

    #[test]
    fn status_messages_are_cleaned_and_other_fields_kept() {
        use crate::api::v1alpha1::{DestinationStatus, ImageReplicationStatus};
        let st = ImageReplicationStatus {
            destinations: vec![DestinationStatus {
                region: "token=notasecret".into(),
                message: Some("HTTP 401: Authorization: Bearer abcdefghijkl".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let clean = status(st.clone());
        assert_eq!(
            clean.destinations[0].message.as_deref(),
            Some("HTTP 401: Authorization: [redacted]")
        );
        assert_eq!(clean.destinations[0].region, "token=notasecret");
        assert_eq!(status(clean.clone()), clean);
    }
}
