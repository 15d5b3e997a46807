//! Image references and registry addresses.

use std::fmt;

/// Where a registry is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryAddr {
    /// `http` or `https`.
    pub scheme: String,
    /// host[:port]
    pub host: String,
}

impl RegistryAddr {
    /// Parse `https://host[:port]`, `http://host[:port]` or a bare `host[:port]` (https, except
    /// loopback hosts, which are plain http as Docker treats them).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, host) = match s.split_once("://") {
            Some((sc, h)) if sc == "http" || sc == "https" => (sc.to_string(), h.to_string()),
            Some((sc, _)) => return Err(format!("registry scheme {sc:?} is not http or https")),
            None => (default_scheme(s).to_string(), s.to_string()),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("{s:?} is not a registry address (scheme://host[:port])"));
        }
        Ok(Self { scheme, host })
    }

    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

fn default_scheme(host: &str) -> &'static str {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host })
        .unwrap_or(host);
    if h == "localhost" || h == "127.0.0.1" || h == "[::1]" || h.starts_with("127.") {
        "http"
    } else {
        "https"
    }
}

impl fmt::Display for RegistryAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: RegistryAddr,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse a reference such as `127.0.0.1:5000/team/web:1.4`, `registry.example.com/a/b@sha256:…`
    /// or `https://registry.example.com/a/b:tag`. The registry part is required.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, r)) => (Some(sc), r),
            None => (None, s),
        };
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no registry host: use host[:port]/repository[:tag]"))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(format!("{s:?} has no registry host: use host[:port]/repository[:tag]"));
        }
        let registry = RegistryAddr::parse(&match scheme {
            Some(sc) => format!("{sc}://{host}"),
            None => host.to_string(),
        })?;
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(d.to_string())),
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path.to_string(), None),
        };
        if let Some(d) = &digest
            && !valid_digest(d)
        {
            return Err(format!("{d:?} is not a sha256 digest"));
        }
        if !valid_repository(&repository) {
            return Err(format!(
                "{repository:?} is not a repository name (lowercase a-z, 0-9, '.', '_', '-', '/')"
            ));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(format!("{t:?} is not a tag"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!("{s:?} needs a tag or a digest"));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag, else the digest: what to ask the registry for.
    pub fn reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn valid_repository(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && t.as_bytes()[0] != b'.'
        && t.as_bytes()[0] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("127.0.0.1:5000/team/web:1.4").unwrap();
        assert_eq!(r.registry.url(), "http://127.0.0.1:5000");
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("team/web", Some("1.4")));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("registry.example.com/a/b@{d}")).unwrap();
        assert_eq!(r.registry.url(), "https://registry.example.com");
        assert_eq!(r.reference(), d);
        let r = ImageRef::parse("http://reg.internal:8080/x:y").unwrap();
        assert_eq!(r.registry.url(), "http://reg.internal:8080");
        for bad in [
            "web:1.4",
            "reg.example.com/Web:1",
            "reg.example.com/web",
            "reg.example.com/web@sha256:zz",
            "ftp://r.io/a:b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_addresses() {
        assert_eq!(
            RegistryAddr::parse("http://127.0.0.1:5001/").unwrap().url(),
            "http://127.0.0.1:5001"
        );
        assert_eq!(
            RegistryAddr::parse("localhost:5000").unwrap().url(),
            "http://localhost:5000"
        );
        assert_eq!(
            RegistryAddr::parse("sh.registry.example.com").unwrap().url(),
            "https://sh.registry.example.com"
        );
        assert!(RegistryAddr::parse("https://a/b").is_err());
    }
}
