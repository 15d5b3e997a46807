//! Registry operations of the distribution API on top of [`Registry::send`].

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RANGE};
use serde::Deserialize;

use super::client::{OciError, Registry, expect_status};
pub use super::digest::{hex, sha256_digest};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Bytes an upload holds from its status `Range: 0-<last byte>`. Distribution answers `0-0` for
/// an upload that holds nothing (and would for one byte, which a chunked upload never holds):
/// `0-0` is 0 bytes, so a resume after a failed first chunk starts at byte 0, not 1.
pub fn held_bytes(range: Option<&str>) -> u64 {
    match range.and_then(|r| r.trim().rsplit('-').next()?.parse::<u64>().ok()) {
        Some(0) | None => 0,
        Some(end) => end + 1,
    }
}

/// A manifest as stored: exact bytes, media type, digest of the bytes.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: String,
}

/// A content descriptor.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

/// The parts of a manifest or index the copy needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestBody {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub blobs: Vec<Descriptor>,
}

impl Manifest {
    pub fn parse(&self) -> Result<ManifestBody, OciError> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| OciError::Unsupported(format!("manifest {} is not valid JSON: {e}", self.digest)))
    }
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// Result of a cross-repository mount request.
pub enum Mount {
    /// The blob is now in the repository.
    Mounted,
    /// The registry did not mount; upload to this location instead.
    Upload(String),
}

fn scope(repo: &str, push: bool) -> String {
    format!("repository:{repo}:{}", if push { "pull,push" } else { "pull" })
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

impl Registry {
    /// GET a manifest; None when it does not exist. When `reference` is a digest the bytes are
    /// verified against it.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<Manifest>, OciError> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        // An answer cut mid-body is asked for again, like a failed request.
        let mut cuts = 0;
        let (ct, bytes) = loop {
            let resp = self
                .send("get manifest", Method::GET, &url, &scope(repo, false), h.clone(), None)
                .await?;
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
            let resp = expect_status("get manifest", resp, &[200]).await?;
            let ct = header(&resp, CONTENT_TYPE).unwrap_or_default();
            match resp.bytes().await {
                Ok(b) => break (ct, b),
                Err(e) if cuts + 1 < self.retry.max_attempts => {
                    cuts += 1;
                    tracing::debug!(error = %e.without_url(), "manifest answer cut; asking again");
                    tokio::time::sleep(self.retry.delay(cuts)).await;
                }
                Err(e) => {
                    return Err(OciError::Transport {
                        op: "get manifest",
                        message: e.without_url().to_string(),
                    });
                }
            }
        };
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(OciError::DigestMismatch {
                what: format!("manifest {repo}@{reference}"),
                expected: reference.to_string(),
                got: digest,
            });
        }
        let media_type = if ct.is_empty() || ct == "application/json" {
            serde_json::from_slice::<ManifestBody>(&bytes)
                .ok()
                .and_then(|b| b.media_type)
                .unwrap_or(ct)
        } else {
            ct.split(';').next().unwrap_or("").trim().to_string()
        };
        if ![OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].contains(&media_type.as_str()) {
            return Err(OciError::Unsupported(format!(
                "{repo}:{reference} has unsupported manifest type {media_type:?}"
            )));
        }
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// HEAD a manifest: its digest, or None when absent.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<String>, OciError> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self
            .send("head manifest", Method::HEAD, &url, &scope(repo, false), h, None)
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = expect_status("head manifest", resp, &[200]).await?;
        Ok(header(&resp, "docker-content-digest".parse().expect("static")))
    }

    /// PUT a manifest under a tag or its digest; the registry's digest must equal ours.
    pub async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<(), OciError> {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type).map_err(|e| OciError::Unsupported(e.to_string()))?,
        );
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        // distribution's filesystem storage can briefly misread blob links written concurrently
        // in the same repository (DIGEST_INVALID / MANIFEST_BLOB_UNKNOWN although every blob was
        // just verified present); a manifest PUT is idempotent, so try again shortly.
        let mut attempt = 0;
        let resp = loop {
            let resp = self
                .send(
                    "put manifest",
                    Method::PUT,
                    &url,
                    &scope(repo, true),
                    h.clone(),
                    Some(m.bytes.clone()),
                )
                .await?;
            match expect_status("put manifest", resp, &[201, 200]).await {
                Err(OciError::Http {
                    status: 400,
                    code: Some(ref code),
                    ..
                }) if attempt < 3 && (code == "DIGEST_INVALID" || code == "MANIFEST_BLOB_UNKNOWN") => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250 * attempt)).await;
                }
                other => break other?,
            }
        };
        if let Some(d) = header(&resp, "docker-content-digest".parse().expect("static"))
            && d != m.digest
        {
            return Err(OciError::DigestMismatch {
                what: format!("manifest written to {}/{repo}:{reference}", self.addr.host),
                expected: m.digest.clone(),
                got: d,
            });
        }
        Ok(())
    }

    /// DELETE a manifest by digest (removes every tag pointing at it). False when absent.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool, OciError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let resp = self
            .send(
                "delete manifest",
                Method::DELETE,
                &url,
                &scope(repo, true),
                HeaderMap::new(),
                None,
            )
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        expect_status("delete manifest", resp, &[202, 200]).await?;
        Ok(true)
    }

    /// Whether a blob exists in a repository.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Result<bool, OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(
                "head blob",
                Method::HEAD,
                &url,
                &scope(repo, false),
                HeaderMap::new(),
                None,
            )
            .await?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => expect_status("head blob", resp, &[200]).await.map(|_| true),
        }
    }

    /// GET a blob from `offset` on (a Range request when offset > 0).
    pub async fn get_blob(&self, repo: &str, digest: &str, offset: u64) -> Result<reqwest::Response, OciError> {
        let mut h = HeaderMap::new();
        if offset > 0 {
            h.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
            );
        }
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send("get blob", Method::GET, &url, &scope(repo, false), h, None)
            .await?;
        let resp = expect_status("get blob", resp, &[200, 206]).await?;
        if offset > 0 && resp.status().as_u16() != 206 {
            return Err(OciError::Unsupported(format!(
                "{} does not serve byte ranges of blobs",
                self.addr.host
            )));
        }
        Ok(resp)
    }

    /// Ask for a cross-repository mount of `digest` from `from`.
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<Mount, OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"));
        let sc = format!("{} repository:{from}:pull", scope(repo, true));
        let resp = self
            .send("mount blob", Method::POST, &url, &sc, HeaderMap::new(), None)
            .await?;
        let resp = expect_status("mount blob", resp, &[201, 202]).await?;
        if resp.status().as_u16() == 201 {
            return Ok(Mount::Mounted);
        }
        header(&resp, LOCATION)
            .map(Mount::Upload)
            .ok_or_else(|| OciError::Unsupported("upload started without a Location".into()))
    }

    /// Start an upload session; returns its location.
    pub async fn start_upload(&self, repo: &str) -> Result<String, OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .send(
                "start upload",
                Method::POST,
                &url,
                &scope(repo, true),
                HeaderMap::new(),
                None,
            )
            .await?;
        let resp = expect_status("start upload", resp, &[202]).await?;
        header(&resp, LOCATION).ok_or_else(|| OciError::Unsupported("upload started without a Location".into()))
    }

    /// PATCH `len` bytes at `offset` from a stream (not buffered); returns the next location.
    pub async fn patch_stream(
        &self,
        repo: &str,
        location: &str,
        offset: u64,
        len: u64,
        body: reqwest::Body,
    ) -> Result<String, OciError> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        let end = offset + len - 1;
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&format!("{offset}-{end}")).expect("ascii"),
        );
        let resp = self
            .send_streaming(
                "upload chunk",
                Method::PATCH,
                &self.url(location),
                &scope(repo, true),
                h,
                body,
            )
            .await?;
        let resp = expect_status("upload chunk", resp, &[202, 204]).await?;
        Ok(header(&resp, LOCATION).unwrap_or_else(|| location.to_string()))
    }

    /// How many bytes of an upload the registry holds, and the current location.
    pub async fn upload_status(&self, repo: &str, location: &str) -> Result<(u64, String), OciError> {
        let resp = self
            .send(
                "upload status",
                Method::GET,
                &self.url(location),
                &scope(repo, true),
                HeaderMap::new(),
                None,
            )
            .await?;
        let resp = expect_status("upload status", resp, &[204]).await?;
        let loc = header(&resp, LOCATION).unwrap_or_else(|| location.to_string());
        Ok((held_bytes(header(&resp, RANGE).as_deref()), loc))
    }

    /// Finish an upload with its digest.
    pub async fn finish_upload(&self, repo: &str, location: &str, digest: &str) -> Result<(), OciError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = self.url(&format!("{location}{sep}digest={digest}"));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(0));
        let resp = self
            .send(
                "finish upload",
                Method::PUT,
                &url,
                &scope(repo, true),
                h,
                Some(Bytes::new()),
            )
            .await?;
        let resp = expect_status("finish upload", resp, &[201, 204]).await?;
        if let Some(d) = header(&resp, "docker-content-digest".parse().expect("static"))
            && d != digest
        {
            return Err(OciError::DigestMismatch {
                what: format!("blob written to {}/{repo}", self.addr.host),
                expected: digest.to_string(),
                got: d,
            });
        }
        Ok(())
    }

    /// Cancel an upload session. `Ok(false)` when the registry no longer has it (404
    /// `BLOB_UPLOAD_UNKNOWN`). Any other refusal is an error: distribution answers 404
    /// `BLOB_UPLOAD_INVALID` to every request on a session whose PATCH was cut (its upload state
    /// names an offset the stored bytes no longer match) and keeps the session until it purges
    /// old uploads.
    pub async fn cancel_upload(&self, repo: &str, location: &str) -> Result<bool, OciError> {
        let resp = self
            .send(
                "cancel upload",
                Method::DELETE,
                &self.url(location),
                &scope(repo, true),
                HeaderMap::new(),
                None,
            )
            .await?;
        match expect_status("cancel upload", resp, &[200, 202, 204]).await {
            Ok(_) => Ok(true),
            Err(OciError::Http {
                status: 404,
                code: Some(ref code),
                ..
            }) if code == "BLOB_UPLOAD_UNKNOWN" => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn paged(&self, op: &'static str, first: String, sc: &str, field: &str) -> Result<Vec<String>, OciError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let resp = self
                .send(op, Method::GET, &self.url(&path), sc, HeaderMap::new(), None)
                .await?;
            if resp.status().as_u16() == 404 {
                break;
            }
            let resp = expect_status(op, resp, &[200]).await?;
            next = header(&resp, reqwest::header::LINK).and_then(|l| {
                let start = l.find('<')? + 1;
                let end = l[start..].find('>')? + start;
                Some(l[start..end].to_string())
            });
            let v: serde_json::Value = resp.json().await.map_err(|e| OciError::Transport {
                op,
                message: e.without_url().to_string(),
            })?;
            if let Some(items) = v.get(field).and_then(|t| t.as_array()) {
                out.extend(items.iter().filter_map(|t| t.as_str().map(String::from)));
            }
        }
        Ok(out)
    }

    /// Every tag of a repository (follows `Link` paging where the registry pages).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, OciError> {
        self.paged(
            "list tags",
            format!("/v2/{repo}/tags/list"),
            &scope(repo, false),
            "tags",
        )
        .await
    }

    /// Every repository of the registry (catalog with paging).
    pub async fn catalog(&self) -> Result<Vec<String>, OciError> {
        self.paged(
            "catalog",
            "/v2/_catalog?n=1000".into(),
            "registry:catalog:*",
            "repositories",
        )
        .await
    }

    /// Referrers of a manifest through the OCI 1.1 API; None when the registry lacks the API.
    pub async fn referrers(&self, repo: &str, digest: &str) -> Result<Option<Vec<Descriptor>>, OciError> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let resp = self
            .send("referrers", Method::GET, &url, &scope(repo, false), h, None)
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = expect_status("referrers", resp, &[200]).await?;
        let body: ManifestBody = resp.json().await.map_err(|e| OciError::Transport {
            op: "referrers",
            message: e.without_url().to_string(),
        })?;
        Ok(Some(body.manifests))
    }
}

#[cfg(test)]
mod tests {
    use super::held_bytes;

    #[test]
    fn upload_status_ranges() {
        // Distribution's answer for an upload holding nothing: resume at byte 0.
        assert_eq!(held_bytes(Some("0-0")), 0);
        assert_eq!(held_bytes(None), 0);
        assert_eq!(held_bytes(Some("0-1048575")), 1 << 20);
        assert_eq!(held_bytes(Some("bytes=0-99")), 100);
        assert_eq!(held_bytes(Some("garbage")), 0);
    }
}
