//! Where the operator may connect: the egress policy.
//!
//! Anyone who may create an ImageReplication or a ReplicaInstance chooses URLs the operator
//! talks to, and reads the answers back through status and Events. The policy, set by the
//! cluster admin in the operator's configuration, draws the line:
//!
//! - two allow lists of host rules, one for registries (`destinations[].registry`,
//!   `source.reference`, `primary.registry`, `replica.registry`, token realms, blob redirects)
//!   and one for cloud API endpoints (`provider.endpoint`, the providers' default endpoints,
//!   OpenStack `authUrl` and catalog endpoints, endpoints named in credential Secrets). A rule is
//!   `*`, `*.suffix` (subdomains of `suffix`), or an exact host, each with an optional `:port`;
//! - refused addresses: loopback, link-local (the clouds' metadata services), unspecified, the
//!   Alibaba metadata address and the Kubernetes API server's own address. A refused address is
//!   reached only when a rule names its host exactly (a wildcard never opens it), and the API
//!   server only when the rule also names its port.
//!
//! It is enforced three times: when the spec is validated (`Validated=False`, reason
//! `EgressRefused`, nothing started), before every request (IP literals), and in the HTTP
//! clients' DNS resolver and redirect policy (a name that resolves to a refused address, a
//! redirect to a refused host).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// The two lists a URL is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// OCI registries and what they send the client to (token realms, blob redirects).
    Registry,
    /// Cloud API endpoints (IMS, ECS, EC2, CVM, TCR, Keystone and Glance).
    Cloud,
}

impl Class {
    fn list(self) -> &'static str {
        match self {
            Self::Registry => "registry hosts (--egress-registry-hosts)",
            Self::Cloud => "cloud endpoint hosts (--egress-cloud-hosts)",
        }
    }
}

/// Any registry host, except refused addresses.
pub const DEFAULT_REGISTRY_HOSTS: &str = "*";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Any,
    /// `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
    Exact(String),
}

/// One allow rule: a host pattern and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pattern: Pattern,
    port: Option<u16>,
}

impl FromStr for Rule {
    type Err = String;

    /// `*`, `*.example.com`, `registry.example.com`, `10.0.0.5:5000`, `[::1]:5000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let bad = |why: &str| format!("egress rule {s:?}: {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.contains("://") || s.contains('/') {
            return Err(bad("a host with an optional :port, not a URL"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| bad("port must be 1 to 65535"))?),
                None if after.is_empty() => None,
                None => return Err(bad("text after ]")),
            };
            (h.to_string(), port)
        } else if s.matches(':').count() > 1 {
            (s.clone(), None) // a bare IPv6 address
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (
                h.to_string(),
                Some(p.parse::<u16>().map_err(|_| bad("port must be 1 to 65535"))?),
            )
        } else {
            (s.clone(), None)
        };
        if port == Some(0) {
            return Err(bad("port must be 1 to 65535"));
        }
        let pattern = if host == "*" {
            Pattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(bad("a wildcard is '*' or '*.suffix'"));
            }
            Pattern::Suffix(format!(".{suffix}"))
        } else if host.contains('*') {
            return Err(bad("a wildcard is '*' or '*.suffix'"));
        } else {
            Pattern::Exact(normal_host(&host))
        };
        Ok(Self { pattern, port })
    }
}

impl Rule {
    fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match &self.pattern {
                Pattern::Any => true,
                Pattern::Suffix(s) => host.ends_with(s.as_str()),
                Pattern::Exact(h) => h == host,
            }
    }
    fn exact(&self) -> bool {
        matches!(self.pattern, Pattern::Exact(_))
    }
}

/// Parse a comma-separated list of rules.
pub fn parse_rules(list: &str) -> Result<Vec<Rule>, String> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Rule::from_str)
        .collect()
}

/// An address range: network and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
    what: &'static str,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn refused_nets() -> Vec<Net> {
    let v4 = |a, b, c, d, prefix, what| Net {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix,
        what,
    };
    let v6 = |s: &str, prefix, what| Net {
        addr: IpAddr::V6(s.parse().expect("literal")),
        prefix,
        what,
    };
    vec![
        v4(127, 0, 0, 0, 8, "a loopback address"),
        v4(0, 0, 0, 0, 8, "an unspecified address"),
        v4(169, 254, 0, 0, 16, "a link-local address (cloud metadata services)"),
        v4(100, 100, 100, 200, 32, "the Alibaba Cloud metadata address"),
        v6("::1", 128, "a loopback address"),
        v6("::", 128, "an unspecified address"),
        v6("fe80::", 10, "a link-local address"),
        v6("fd00:ec2::254", 128, "the AWS metadata address"),
    ]
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A host as compared: lowercase, no brackets, no trailing dot, IP literals canonical.
fn normal_host(h: &str) -> String {
    let h = h.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    match h.parse::<IpAddr>() {
        Ok(ip) => canonical(ip).to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

/// Why a URL is refused; names the host and the rule that refused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub host: String,
    pub why: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the operator's egress policy refuses {}: {}", self.host, self.why)
    }
}

impl std::error::Error for Refusal {}

/// The egress policy.
#[derive(Clone, Debug)]
pub struct Policy {
    registry: Vec<Rule>,
    cloud: Vec<Rule>,
    refused: Vec<Net>,
    /// The Kubernetes API server's addresses (ip, port).
    api_server: Vec<(IpAddr, u16)>,
    /// Refuses nothing (the library's default when no policy is installed, e.g. in unit tests).
    open: bool,
}

impl Policy {
    pub fn new(registry: Vec<Rule>, cloud: Vec<Rule>) -> Self {
        Self {
            registry,
            cloud,
            refused: refused_nets(),
            api_server: Vec::new(),
            open: false,
        }
    }

    /// A policy that allows everything.
    pub fn open() -> Self {
        Self {
            open: true,
            ..Self::new(Vec::new(), Vec::new())
        }
    }

    /// From the comma-separated lists of the configuration.
    pub fn from_lists(registry: &str, cloud: &str) -> Result<Self, String> {
        Ok(Self::new(parse_rules(registry)?, parse_rules(cloud)?))
    }

    /// Refuse the Kubernetes API server at this address (a name is kept only if it is an IP).
    pub fn with_api_server(mut self, host: &str, port: u16) -> Self {
        if let Ok(ip) = normal_host(host).parse::<IpAddr>() {
            self.api_server.push((ip, port));
        }
        self
    }

    fn rules(&self, class: Class) -> &[Rule] {
        match class {
            Class::Registry => &self.registry,
            Class::Cloud => &self.cloud,
        }
    }

    /// What makes an address refused: a refused range, else being the API server's address
    /// (at any port).
    fn refused_net(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        self.refused
            .iter()
            .find(|n| n.contains(ip))
            .map(|n| n.what)
            .or_else(|| {
                self.api_server
                    .iter()
                    .any(|(a, _)| *a == ip)
                    .then_some("the Kubernetes API server's address")
            })
    }

    /// Check an absolute `http`/`https` URL before any connection.
    pub fn check_url(&self, class: Class, url: &str) -> Result<(), Refusal> {
        if self.open {
            return Ok(());
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| Refusal {
            host: url.to_string(),
            why: format!("not a URL ({e})"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refusal {
                host: url.to_string(),
                why: "only http and https URLs are allowed".into(),
            });
        }
        let host = normal_host(parsed.host_str().unwrap_or(""));
        let port = parsed.port_or_known_default().unwrap_or(443);
        self.check_host(class, &host, port)
    }

    /// Check a host and port: some rule of the class must match, and a refused address
    /// needs a rule naming it exactly (the API server: with its port).
    pub fn check_host(&self, class: Class, host: &str, port: u16) -> Result<(), Refusal> {
        if self.open {
            return Ok(());
        }
        let host = normal_host(host);
        let shown = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let rules = self.rules(class);
        if !rules.iter().any(|r| r.matches(&host, port)) {
            return Err(Refusal {
                host: shown,
                why: format!("it is not in the allowed {}", class.list()),
            });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if self.api_server.contains(&(ip, port)) {
                if !rules
                    .iter()
                    .any(|r| r.exact() && r.port == Some(port) && r.matches(&host, port))
                {
                    return Err(Refusal {
                        host: shown,
                        why: format!(
                            "it is the Kubernetes API server (allowed only by a rule naming its host and port in the {})",
                            class.list()
                        ),
                    });
                }
            } else if let Some(what) = self.refused_net(ip)
                && !rules.iter().any(|r| r.exact() && r.matches(&host, port))
            {
                return Err(Refusal {
                    host: shown,
                    why: format!(
                        "it is {what} (allowed only by a rule naming it exactly in the {})",
                        class.list()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether `host` (a name, already allowed by `check_host`) may connect to `ip`, one of
    /// the addresses it resolved to: a refused address needs a rule naming the host exactly.
    pub fn allows_resolved(&self, class: Class, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self.open || self.refused_net(ip).is_none() {
            return Ok(());
        }
        let host = normal_host(host);
        if self
            .rules(class)
            .iter()
            .any(|r| matches!(&r.pattern, Pattern::Exact(h) if *h == host))
        {
            return Ok(());
        }
        Err(Refusal {
            host: host.clone(),
            why: format!(
                "it resolves to {} ({}); allowed only by a rule naming {host} exactly",
                canonical(ip),
                self.refused_net(ip).unwrap_or("a refused address")
            ),
        })
    }
}

static INSTALLED: OnceLock<Arc<Policy>> = OnceLock::new();

/// Install the process's policy (once, at start-up). Later calls are ignored.
pub fn install(p: Policy) {
    let _ = INSTALLED.set(Arc::new(p));
}

/// The installed policy; without one (library use, unit tests) everything is allowed — the
/// binary always installs one from its configuration, whose defaults refuse.
pub fn current() -> Arc<Policy> {
    INSTALLED.get().cloned().unwrap_or_else(|| Arc::new(Policy::open()))
}

/// A DNS resolver that drops refused addresses of names that are not allowed to reach them.
struct Resolver {
    class: Class,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let class = self.class;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let policy = current();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let kept: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.allows_resolved(class, &host, a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (kept.is_empty(), refusal) {
                (true, Some(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The policy's resolver and redirect rule on a client builder (at most `max_redirects`).
pub fn guard(builder: reqwest::ClientBuilder, class: Class, max_redirects: usize) -> reqwest::ClientBuilder {
    builder
        .dns_resolver(Arc::new(Resolver { class }))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            match current().check_url(class, attempt.url().as_str()) {
                Ok(()) => attempt.follow(),
                Err(r) => attempt.error(r),
            }
        }))
}

/// The refusal inside a reqwest error (a redirect or a resolution the policy refused), if any.
pub fn refusal_in(e: &reqwest::Error) -> Option<Refusal> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        src = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary's default lists: any registry, the clouds' public endpoints.
    fn defaults() -> Policy {
        let clouds = crate::image_replication::vm::providers::default_cloud_hosts();
        Policy::from_lists(DEFAULT_REGISTRY_HOSTS, &clouds).unwrap()
    }

    fn policy(registry: &str, cloud: &str) -> Policy {
        Policy::from_lists(registry, cloud).unwrap()
    }

    fn refused(p: &Policy, class: Class, url: &str) -> Option<String> {
        p.check_url(class, url).err().map(|r| r.to_string())
    }

    #[test]
    fn rules_parse_and_refuse_what_is_not_a_host() {
        for bad in [
            "",
            "https://a.example.com",
            "a.example.com/x",
            "a*.example.com",
            "*.",
            "h:0",
            "h:99999",
            "[::1",
        ] {
            assert!(Rule::from_str(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "*",
            "*.example.com",
            "Registry.Example.com",
            "10.0.0.5:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(Rule::from_str(good).is_ok(), "{good:?} should parse");
        }
    }

    #[test]
    fn defaults_allow_public_registries_and_the_clouds_and_refuse_metadata_and_loopback() {
        let p = defaults().with_api_server("10.96.0.1", 443);
        let r = Class::Registry;
        let c = Class::Cloud;
        // (class, url, refused)
        let table = [
            (r, "https://registry-1.docker.io/v2/", false),
            (r, "https://ghcr.io", false),
            (r, "http://169.254.169.254/latest/meta-data", true),
            (r, "http://[::ffff:169.254.169.254]/", true),
            (r, "http://[fd00:ec2::254]/", true),
            (r, "http://100.100.100.200/latest/meta-data", true),
            (r, "http://127.0.0.1:5000", true),
            (r, "http://[::1]:5000", true),
            (r, "http://0.0.0.0:5000", true),
            (r, "https://10.96.0.1/api", true),
            (r, "https://10.96.0.1:8443/", true),
            (r, "ftp://registry.example.com", true),
            (c, "https://ims.cn-north-4.myhuaweicloud.com", false),
            (c, "https://iam.myhuaweicloud.com/v3/auth/tokens", false),
            (c, "https://ecs.cn-hangzhou.aliyuncs.com", false),
            (c, "https://ec2.us-east-1.amazonaws.com", false),
            (c, "https://cvm.tencentcloudapi.com", false),
            (c, "https://tcr.tencentcloudapi.com", false),
            (c, "https://myhuaweicloud.com.evil.example", true),
            (c, "https://keystone.example.com:5000/v3", true),
            (c, "http://169.254.169.254/", true),
        ];
        for (class, url, want_refused) in table {
            assert_eq!(p.check_url(class, url).is_err(), want_refused, "{class:?} {url}");
        }
    }

    #[test]
    fn refusals_name_the_host_and_the_list() {
        let p = defaults();
        let m = refused(&p, Class::Cloud, "https://keystone.example.com:5000/v3").unwrap();
        assert!(m.contains("keystone.example.com:5000"), "{m}");
        assert!(m.contains("--egress-cloud-hosts"), "{m}");
        let m = refused(&p, Class::Registry, "http://169.254.169.254/").unwrap();
        assert!(m.contains("169.254.169.254:80") && m.contains("link-local"), "{m}");
    }

    #[test]
    fn a_refused_address_opens_only_to_a_rule_naming_it() {
        let p = policy("*,127.0.0.1:5001", "*");
        assert!(p.check_url(Class::Registry, "http://127.0.0.1:5001/v2/").is_ok());
        assert!(p.check_url(Class::Registry, "http://127.0.0.1:5002/v2/").is_err());
        // A wildcard never opens a refused address.
        assert!(p.check_url(Class::Cloud, "http://127.0.0.1:5001/").is_err());
        // A name allowed by a wildcard does not reach a refused address it resolves to.
        assert!(
            p.allows_resolved(Class::Registry, "evil.example.com", "169.254.169.254".parse().unwrap())
                .is_err()
        );
        assert!(
            p.allows_resolved(Class::Registry, "evil.example.com", "93.184.216.34".parse().unwrap())
                .is_ok()
        );
        let p = policy("localhost", "");
        assert!(
            p.allows_resolved(Class::Registry, "localhost", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.allows_resolved(Class::Registry, "localhost", "::1".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn the_api_server_needs_its_host_and_port_named() {
        let p = policy("127.0.0.1", "*").with_api_server("127.0.0.1", 6443);
        assert!(p.check_url(Class::Registry, "http://127.0.0.1:5000/").is_ok());
        // Another port of the API server's address is refused for what it is.
        let m = refused(
            &defaults().with_api_server("127.0.0.1", 6443),
            Class::Registry,
            "http://127.0.0.1:5000/",
        )
        .unwrap();
        assert!(m.contains("loopback") && !m.contains("API server"), "{m}");
        let m = refused(
            &defaults().with_api_server("10.96.0.1", 443),
            Class::Registry,
            "https://10.96.0.1:8443/",
        )
        .unwrap();
        assert!(m.contains("API server's address"), "{m}");
        let m = refused(&p, Class::Registry, "https://127.0.0.1:6443/api").unwrap();
        assert!(m.contains("Kubernetes API server"), "{m}");
        let p = policy("127.0.0.1:6443", "*").with_api_server("127.0.0.1", 6443);
        assert!(p.check_url(Class::Registry, "https://127.0.0.1:6443/api").is_ok());
    }

    #[test]
    fn suffix_rules_match_subdomains_only_and_ports_when_given() {
        let p = policy("*.example.com:443", "");
        assert!(p.check_url(Class::Registry, "https://a.example.com").is_ok());
        assert!(p.check_url(Class::Registry, "https://a.b.example.com").is_ok());
        assert!(p.check_url(Class::Registry, "https://example.com").is_err());
        assert!(p.check_url(Class::Registry, "http://a.example.com").is_err());
        assert!(p.check_url(Class::Registry, "https://a.example.com.evil.net").is_err());
        assert!(p.check_url(Class::Registry, "https://A.EXAMPLE.COM.").is_ok());
    }

    #[test]
    fn the_open_policy_allows_everything() {
        let p = Policy::open();
        assert!(p.check_url(Class::Registry, "http://169.254.169.254/").is_ok());
    }
}
