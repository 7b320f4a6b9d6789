//! The egress policy of a sandbox in `proxy` network mode: which hosts it may reach and which
//! host-side secrets are swapped in toward which hosts. The grammar of host rules lives here so
//! that CLI flags, profiles, config files and the proxy itself agree on it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::is_valid_env_key;

/// A destination named by a client of the proxy, normalized: lower case, no trailing dot,
/// IP literals parsed (with or without brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses what a client sent as a host (the part before `:port`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let unbracketed = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(&s);
        if let Ok(ip) = IpAddr::from_str(unbracketed) {
            return Ok(Host::Ip(ip));
        }
        check_dns_name(&s).map(|()| Host::Name(s))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A DNS name: labels of 1-63 letters, digits, '-' or '_', at most 253 bytes, and a last label
/// that is not all digits (`127.1` and `0x7f.1` are IP addresses to a resolver, not names).
fn check_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("'{s}' is not a host name"));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("'{s}' is not a host name (bad label '{label}')"));
        }
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(format!(
            "'{s}' looks like a partial IP address; write addresses in full (e.g. 10.0.0.1)"
        ));
    }
    Ok(())
}

/// One entry of an allowlist: `example.com` (that host only), `*.example.com` (any host below
/// it, not the domain itself) or an IP address (that address only; needed to reach IP literals
/// and private addresses, which are refused otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostRule {
    Exact(String),
    /// The suffix without the leading `*.`.
    Suffix(String),
    Ip(IpAddr),
}

impl HostRule {
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostRule::Exact(r), Host::Name(h)) => r == h,
            (HostRule::Suffix(r), Host::Name(h)) => {
                h.len() > r.len() + 1
                    && h.ends_with(r.as_str())
                    && h.as_bytes()[h.len() - r.len() - 1] == b'.'
            }
            (HostRule::Ip(r), Host::Ip(h)) => canonical_ip(*r) == canonical_ip(*h),
            _ => false,
        }
    }

    /// Whether the rule names a host (not an address): only those can carry a credential.
    pub fn is_name(&self) -> bool {
        !matches!(self, HostRule::Ip(_))
    }
}

/// `::ffff:10.0.0.1` is 10.0.0.1.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s == "*" || s.is_empty() {
            return Err(format!(
                "invalid host rule '{s}': name a host (api.example.com) or a domain (*.example.com); \
                 for unrestricted access use --network full"
            ));
        }
        if s.contains(':') && !s.starts_with('[') && IpAddr::from_str(s).is_err() {
            return Err(format!("invalid host rule '{s}': give a host without a port or scheme"));
        }
        if let Some(rest) = s.strip_prefix("*.") {
            return match Host::parse(rest)? {
                Host::Name(n) if n.contains('.') => Ok(HostRule::Suffix(n)),
                Host::Name(n) => Err(format!(
                    "invalid host rule '*.{n}': a wildcard needs at least two labels (*.example.com)"
                )),
                Host::Ip(_) => Err(format!("invalid host rule '{s}': a wildcard cannot cover an address")),
            };
        }
        if s.contains('*') {
            return Err(format!("invalid host rule '{s}': '*' is only allowed as a leading '*.'"));
        }
        match Host::parse(s) {
            Ok(Host::Name(n)) => Ok(HostRule::Exact(n)),
            Ok(Host::Ip(ip)) => Ok(HostRule::Ip(ip)),
            Err(e) => Err(format!("invalid host rule: {e}")),
        }
    }
}

impl TryFrom<String> for HostRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HostRule> for String {
    fn from(r: HostRule) -> String {
        r.to_string()
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Exact(h) => f.write_str(h),
            HostRule::Suffix(h) => write!(f, "*.{h}"),
            HostRule::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A host-side secret, known inside the sandbox only as `placeholder` (in variable `env`), and
/// swapped for its real value by the proxy in requests toward `hosts` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    pub env: String,
    pub hosts: Vec<HostRule>,
    pub placeholder: String,
}

/// The egress policy of a `proxy`-mode sandbox. Hosts that carry a secret are allowed too.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    #[serde(default)]
    pub allow: Vec<HostRule>,
    #[serde(default)]
    pub secrets: Vec<SecretBinding>,
    /// A request to a host outside the policy waits briefly for `agentbox allow` instead of
    /// failing at once.
    #[serde(default)]
    pub ask: bool,
}

/// Parses `--secret NAME` or `--secret NAME=HOST[,HOST...]`.
pub fn parse_secret_arg(s: &str) -> Result<(String, Option<Vec<HostRule>>), String> {
    let (name, hosts) = match s.split_once('=') {
        Some((n, h)) => (n, Some(h)),
        None => (s, None),
    };
    if !is_valid_env_key(name) {
        return Err(format!(
            "invalid --secret '{s}': use NAME or NAME=HOST[,HOST...] where NAME is a variable name"
        ));
    }
    let hosts = match hosts {
        None => None,
        Some(h) => {
            let rules = h.split(',').map(HostRule::from_str).collect::<Result<Vec<_>, _>>()?;
            check_secret_hosts(name, &rules)?;
            Some(rules)
        }
    };
    Ok((name.to_string(), hosts))
}

/// A secret is bound to at least one host, and only to names: a certificate for an address
/// would be needed to intercept it, and addresses change hands.
pub fn check_secret_hosts(name: &str, hosts: &[HostRule]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err(format!("secret {name}: bind it to at least one host"));
    }
    if let Some(ip) = hosts.iter().find(|h| !h.is_name()) {
        return Err(format!("secret {name}: bind it to host names, not to the address {ip}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn rules_match_as_documented() {
        let exact: HostRule = "API.Example.com.".parse().unwrap();
        assert_eq!(exact.to_string(), "api.example.com");
        assert!(exact.matches(&h("api.example.com")));
        assert!(exact.matches(&h("API.EXAMPLE.COM.")));
        assert!(!exact.matches(&h("x.api.example.com")));
        let wild: HostRule = "*.example.com".parse().unwrap();
        assert!(wild.matches(&h("a.example.com")));
        assert!(wild.matches(&h("a.b.example.com")));
        assert!(!wild.matches(&h("example.com")));
        assert!(!wild.matches(&h("badexample.com")));
        let ip: HostRule = "10.0.0.1".parse().unwrap();
        assert!(ip.matches(&h("10.0.0.1")));
        assert!(ip.matches(&h("[::ffff:10.0.0.1]")));
        assert!(!ip.matches(&h("10.0.0.2")));
        let v6: HostRule = "[::1]".parse().unwrap();
        assert!(v6.matches(&h("::1")));
    }

    #[test]
    fn bad_rules_say_why() {
        for (bad, says) in [
            ("*", "--network full"),
            ("", "name a host"),
            ("*.com", "two labels"),
            ("a.*.com", "leading"),
            ("example.com:443", "port"),
            ("https://x.com", "port or scheme"),
            ("127.1", "partial IP"),
            ("a..b", "bad label"),
            ("-a.com", "bad label"),
            ("*.10.0.0.1", "address"),
        ] {
            let e = bad.parse::<HostRule>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_args() {
        assert_eq!(parse_secret_arg("TOKEN").unwrap(), ("TOKEN".into(), None));
        let (n, hosts) = parse_secret_arg("TOKEN=github.com,*.github.com").unwrap();
        assert_eq!(n, "TOKEN");
        assert_eq!(hosts.unwrap().len(), 2);
        assert!(parse_secret_arg("1X=a.com").is_err());
        assert!(parse_secret_arg("X=").is_err());
        assert!(parse_secret_arg("X=10.0.0.1").unwrap_err().contains("address"));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = EgressSpec {
            allow: vec!["*.npmjs.org".parse().unwrap(), "1.2.3.4".parse().unwrap()],
            secrets: vec![SecretBinding {
                env: "K".into(),
                hosts: vec!["api.example.com".parse().unwrap()],
                placeholder: "p".into(),
            }],
            ask: true,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<EgressSpec>(&json).unwrap(), spec);
        assert!(serde_json::from_str::<EgressSpec>(r#"{"allow":["*"]}"#).is_err());
    }

    /// Random strings never panic the parsers, and an accepted rule prints as a rule that parses
    /// back to itself.
    #[test]
    fn fuzz_rules() {
        let mut rng = crate::testing::XorShift::new(0x5eed_0fe9_e5e5);
        for _ in 0..20000 {
            let len = rng.below(24);
            let s: String = (0..len).map(|_| rng.pick(b"ab.*-_:[]0179fx ") as char).collect();
            let _ = Host::parse(&s);
            if let Ok(r) = s.parse::<HostRule>() {
                assert_eq!(r.to_string().parse::<HostRule>().unwrap(), r, "{s:?}");
            }
            let _ = parse_secret_arg(&s);
        }
    }
}
