//! Request signing for the clouds' APIs, each checked in tests against the provider's published
//! worked example:
//!
//! - Huawei Cloud `SDK-HMAC-SHA256` (AK/SK, API Gateway signing guide).
//! - Alibaba Cloud RPC signature (`HMAC-SHA1`, signature version 1.0, ECS request signatures).
//! - AWS Signature Version 4 (`AWS4-HMAC-SHA256`, the IAM `ListUsers` example).
//! - Tencent Cloud API 3.0 `TC3-HMAC-SHA256` (the CVM `DescribeInstances` example).
//!
//! Each function is pure: the caller passes the time and nonce, so the examples reproduce exactly.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::oci::api::hex;
use crate::oci::client::urlencode;

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// HMAC-SHA1.
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Query parameters sorted by name then value and encoded per RFC 3986 (`a=1&b=2`).
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut p: Vec<(String, String)> = params.iter().map(|(k, v)| (urlencode(k), urlencode(v))).collect();
    p.sort();
    p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Headers for a canonical request: lower-case names, trimmed values, sorted. Returns
/// (canonical headers block with trailing newline per header, signed header list).
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    h.sort();
    let block = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect::<String>();
    let names = h.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    (block, names)
}

/// What a signing function produced (the intermediate strings are kept for tests and for the
/// stand-ins that check signatures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    /// The `Authorization` header value (empty for Alibaba RPC, which signs in the query).
    pub authorization: String,
}

/// Huawei Cloud `SDK-HMAC-SHA256`. `path` is the URI path; the canonical form always ends with
/// `/`. `headers` must include `host` and `x-sdk-date` (`YYYYMMDDTHHMMSSZ`).
pub fn huawei(
    ak: &str,
    sk: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
) -> Signed {
    let mut uri: String = path.split('/').map(urlencode).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    let (block, signed) = canonical_headers(headers);
    let canonical_request = format!(
        "{method}\n{uri}\n{}\n{block}\n{signed}\n{}",
        canonical_query(query),
        sha256_hex(body)
    );
    let date = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-sdk-date"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let string_to_sign = format!("SDK-HMAC-SHA256\n{date}\n{}", sha256_hex(canonical_request.as_bytes()));
    let signature = hex(&hmac_sha256(sk.as_bytes(), string_to_sign.as_bytes()));
    Signed {
        authorization: format!("SDK-HMAC-SHA256 Access={ak}, SignedHeaders={signed}, Signature={signature}"),
        canonical_request,
        string_to_sign,
        signature,
    }
}

/// Alibaba Cloud RPC signature (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`) over all
/// query parameters except `Signature`. Returns the base64 signature in `signature`.
pub fn alibaba_rpc(secret: &str, method: &str, params: &[(String, String)]) -> Signed {
    let params: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "Signature").cloned().collect();
    let canonical_request = canonical_query(&params);
    let string_to_sign = format!("{method}&{}&{}", urlencode("/"), urlencode(&canonical_request));
    let mac = hmac_sha1(format!("{secret}&").as_bytes(), string_to_sign.as_bytes());
    Signed {
        canonical_request,
        string_to_sign,
        signature: base64::engine::general_purpose::STANDARD.encode(mac),
        authorization: String::new(),
    }
}

/// AWS Signature Version 4. `amz_date` is `YYYYMMDDTHHMMSSZ`; `headers` must include `host` and
/// `x-amz-date` (and `x-amz-security-token` when a session token is used).
#[allow(clippy::too_many_arguments)]
pub fn aws_v4(
    access_key: &str,
    secret_key: &str,
    region: &str,
    service: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
    amz_date: &str,
) -> Signed {
    let (block, signed) = canonical_headers(headers);
    let uri = if path.is_empty() { "/" } else { path };
    let canonical_request = format!(
        "{method}\n{uri}\n{}\n{block}\n{signed}\n{}",
        canonical_query(query),
        sha256_hex(body)
    );
    let day = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut k = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), day.as_bytes());
    for part in [region, service, "aws4_request"] {
        k = hmac_sha256(&k, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&k, string_to_sign.as_bytes()));
    Signed {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        ),
        canonical_request,
        string_to_sign,
        signature,
    }
}

/// Tencent Cloud `TC3-HMAC-SHA256` for a JSON POST to `/`. `headers` are the signed headers
/// (at least `content-type` and `host`); `timestamp` is `X-TC-Timestamp` (Unix seconds).
pub fn tencent_tc3(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    headers: &[(String, String)],
    body: &[u8],
    timestamp: i64,
) -> Signed {
    let (block, signed) = canonical_headers(headers);
    let canonical_request = format!("POST\n/\n\n{block}\n{signed}\n{}", sha256_hex(body));
    let date = k8s_openapi::jiff::Timestamp::from_second(timestamp)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut k = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    for part in [service, "tc3_request"] {
        k = hmac_sha256(&k, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&k, string_to_sign.as_bytes()));
    Signed {
        authorization: format!(
            "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
        ),
        canonical_request,
        string_to_sign,
        signature,
    }
}

/// `YYYYMMDDTHHMMSSZ` (Huawei `X-Sdk-Date`, AWS `X-Amz-Date`) for a UTC time.
pub fn compact_time(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (Alibaba `Timestamp`).
pub fn iso_time(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A random-enough nonce without another dependency: clock, a counter and the process id hashed.
pub fn nonce() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    sha256_hex(format!("{t}-{n}-{}", std::process::id()).as_bytes())[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Huawei Cloud API signing guide, "AK/SK signing and authentication algorithm": the example
    /// GET of `/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs` with its published hashed canonical
    /// request, string to sign and signature.
    #[test]
    fn huawei_published_example() {
        let s = huawei(
            "QTWAOYTTINDUT2QVKYUC",
            "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
            "GET",
            "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
            &kv(&[("marker", "13551d6b-755d-4757-b956-536f674975c0"), ("limit", "2")]),
            &kv(&[
                ("Content-Type", "application/json"),
                ("Host", "service.region.example.com"),
                ("X-Sdk-Date", "20191115T033655Z"),
            ]),
            b"",
        );
        assert_eq!(
            sha256_hex(s.canonical_request.as_bytes()),
            "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
        );
        assert_eq!(
            s.string_to_sign,
            "SDK-HMAC-SHA256\n20191115T033655Z\nb25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
        );
        assert_eq!(
            s.authorization,
            "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
        );
    }

    /// Alibaba Cloud ECS "Request signatures" example: DescribeRegions with AccessKey `testid` /
    /// `testsecret`; published StringToSign and signature `CT9X0VtwR86fNWSnsc6v8YGOjuE=`.
    #[test]
    fn alibaba_published_example() {
        let s = alibaba_rpc(
            "testsecret",
            "GET",
            &kv(&[
                ("TimeStamp", "2016-02-23T12:46:24Z"),
                ("Format", "XML"),
                ("AccessKeyId", "testid"),
                ("Action", "DescribeRegions"),
                ("SignatureMethod", "HMAC-SHA1"),
                ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
                ("Version", "2014-05-26"),
                ("SignatureVersion", "1.0"),
            ]),
        );
        assert_eq!(
            s.string_to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(s.signature, "CT9X0VtwR86fNWSnsc6v8YGOjuE=");
    }

    /// AWS General Reference, "Signature Version 4 signing process" example: IAM ListUsers on
    /// 2015-08-30 with the documentation's example keys.
    #[test]
    fn aws_published_example() {
        let s = aws_v4(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "iam",
            "GET",
            "/",
            &kv(&[("Version", "2010-05-08"), ("Action", "ListUsers")]),
            &kv(&[
                ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                ("Host", "iam.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ]),
            b"",
            "20150830T123600Z",
        );
        assert_eq!(
            sha256_hex(s.canonical_request.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    /// Tencent Cloud API 3.0 "Signature v3" example: CVM DescribeInstances in ap-guangzhou at
    /// timestamp 1551113065 with the documentation's example keys; published payload hash,
    /// canonical request hash and signature.
    #[test]
    fn tencent_published_example() {
        let body = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let s = tencent_tc3(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "cvm",
            &kv(&[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Host", "cvm.tencentcloudapi.com"),
            ]),
            body.as_bytes(),
            1551113065,
        );
        assert!(
            s.canonical_request
                .ends_with("\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
        );
        assert_eq!(
            s.string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            s.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn times_and_nonces() {
        let t: k8s_openapi::jiff::Timestamp = "2019-11-15T03:36:55Z".parse().unwrap();
        assert_eq!(compact_time(t), "20191115T033655Z");
        assert_eq!(iso_time(t), "2019-11-15T03:36:55Z");
        assert_ne!(nonce(), nonce());
    }
}
