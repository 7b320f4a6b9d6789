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

/// What a rule names: `example.com` (that host only), `*.example.com` (any host below it, not
/// the domain itself) or an IP address (that address only; needed to reach IP literals and
/// private addresses, which are refused otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// The suffix without the leading `*.`.
    Suffix(String),
    Ip(IpAddr),
}

/// One entry of an allowlist or of a secret's hosts: a [`HostPattern`] and an optional port.
/// Without a port a rule allows the web's ports only, 443 (CONNECT) and 80 (plain HTTP); `:PORT`
/// allows that port instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostRule {
    pub pattern: HostPattern,
    pub port: Option<u16>,
}

/// The ports a rule without a port allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

impl HostRule {
    /// A rule for exactly `name`, on the default ports.
    pub fn exact(name: &str) -> Self {
        Self { pattern: HostPattern::Exact(name.to_string()), port: None }
    }

    /// Whether `host:port` falls under the rule.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        self.matches_host(host)
            && match self.port {
                Some(p) => p == port,
                None => DEFAULT_PORTS.contains(&port),
            }
    }

    /// Whether the rule names `host`, whatever the port.
    pub fn matches_host(&self, host: &Host) -> bool {
        match (&self.pattern, host) {
            (HostPattern::Exact(r), Host::Name(h)) => r == h,
            (HostPattern::Suffix(r), Host::Name(h)) => {
                h.len() > r.len() + 1
                    && h.ends_with(r.as_str())
                    && h.as_bytes()[h.len() - r.len() - 1] == b'.'
            }
            (HostPattern::Ip(r), Host::Ip(h)) => canonical_ip(*r) == canonical_ip(*h),
            _ => false,
        }
    }

    /// Whether the rule names a host (not an address): only those can carry a credential.
    pub fn is_name(&self) -> bool {
        !matches!(self.pattern, HostPattern::Ip(_))
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
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "invalid host rule '{s}': give a host and an optional port, without a scheme or path"
            ));
        }
        let (host, port) = split_port(s)?;
        let pattern = HostPattern::from_str(host)?;
        Ok(Self { pattern, port })
    }
}

/// `host:port`, `[v6]:port`, `v6`, or `host` -> (host, port).
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = |p: &str| format!("invalid host rule '{s}': '{p}' is not a port (1-65535)");
    let parse_port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad_port(p)),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("invalid host rule '{s}': unbalanced '['"));
        };
        return match after {
            "" => Ok((&s[..inside.len() + 2], None)),
            p => match p.strip_prefix(':') {
                Some(p) => Ok((&s[..inside.len() + 2], Some(parse_port(p)?))),
                None => Err(format!("invalid host rule '{s}': expected ':PORT' after ']'")),
            },
        };
    }
    match s.matches(':').count() {
        0 => Ok((s, None)),
        1 => {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((h, Some(parse_port(p)?)))
        }
        // A bare IPv6 address (write [v6]:port for a port).
        _ => Ok((s, None)),
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("*.") {
            return match Host::parse(rest)? {
                Host::Name(n) if n.contains('.') => Ok(HostPattern::Suffix(n)),
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
            Ok(Host::Name(n)) => Ok(HostPattern::Exact(n)),
            Ok(Host::Ip(ip)) => Ok(HostPattern::Ip(ip)),
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
        match (&self.pattern, self.port) {
            (HostPattern::Exact(h), _) => f.write_str(h)?,
            (HostPattern::Suffix(h), _) => write!(f, "*.{h}")?,
            (HostPattern::Ip(IpAddr::V6(ip)), Some(_)) => write!(f, "[{ip}]")?,
            (HostPattern::Ip(ip), _) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// A host-side secret, known inside the sandbox only as `placeholder` (in variable `env`), and
/// swapped for its real value by the proxy in requests toward `hosts` only, in the `headers`
/// its provider reads it from only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    pub env: String,
    pub hosts: Vec<HostRule>,
    pub placeholder: String,
    /// Lower-case header names; empty (specs stored before headers were declared) means
    /// [`default_auth_headers`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

impl SecretBinding {
    /// The headers the placeholder may be swapped in.
    pub fn auth_headers(&self) -> Vec<String> {
        if self.headers.is_empty() {
            default_auth_headers(&self.env)
        } else {
            self.headers.clone()
        }
    }
}

/// Where a provider reads a well-known key from; `authorization` for anything else.
pub fn default_auth_headers(env: &str) -> Vec<String> {
    let names: &[&str] = match env {
        "ANTHROPIC_API_KEY" => &["x-api-key", "authorization"],
        "GEMINI_API_KEY" | "GOOGLE_API_KEY" => &["x-goog-api-key"],
        _ => &["authorization"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Checks a declared header name (`x-api-key`): a token, returned lower-cased.
pub fn check_header_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("'{name}' is not an HTTP header name"))
    }
}

/// A subscription login the sandbox uses: its tokens stay on the host under `login` (a
/// profile's name); the sandbox has the two placeholders. The access token is swapped into the
/// `Authorization` header toward `hosts`; the refresh token into the body of a POST to a token
/// endpoint, whose answer's new tokens are kept on the host and replaced by the placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBinding {
    pub login: String,
    pub hosts: Vec<HostRule>,
    pub access_placeholder: String,
    pub refresh_placeholder: String,
    /// Token endpoints: exact host and path.
    pub token_endpoints: Vec<(HostRule, String)>,
}

impl LoginBinding {
    /// Whether requests to `host` are intercepted for this login.
    pub fn involves(&self, host: &Host) -> bool {
        self.hosts.iter().chain(self.token_endpoints.iter().map(|(h, _)| h)).any(|r| r.matches_host(host))
    }
}

/// The egress policy of a `proxy`-mode sandbox. Hosts that carry a secret are allowed too.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    #[serde(default)]
    pub allow: Vec<HostRule>,
    #[serde(default)]
    pub secrets: Vec<SecretBinding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<LoginBinding>,
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
        assert!(exact.matches(&h("api.example.com"), 443));
        assert!(exact.matches(&h("API.EXAMPLE.COM."), 80));
        assert!(!exact.matches(&h("x.api.example.com"), 443));
        // Without a port only the web's ports; with one, that port only.
        assert!(!exact.matches(&h("api.example.com"), 22));
        let port: HostRule = "api.example.com:8443".parse().unwrap();
        assert_eq!(port.to_string(), "api.example.com:8443");
        assert!(port.matches(&h("api.example.com"), 8443) && !port.matches(&h("api.example.com"), 443));
        let wild: HostRule = "*.example.com".parse().unwrap();
        assert!(wild.matches(&h("a.example.com"), 443));
        assert!(wild.matches(&h("a.b.example.com"), 443));
        assert!(!wild.matches(&h("example.com"), 443));
        assert!(!wild.matches(&h("badexample.com"), 443));
        let ip: HostRule = "10.0.0.1".parse().unwrap();
        assert!(ip.matches(&h("10.0.0.1"), 443));
        assert!(ip.matches(&h("[::ffff:10.0.0.1]"), 80));
        assert!(!ip.matches(&h("10.0.0.2"), 443));
        let v6: HostRule = "[::1]".parse().unwrap();
        assert!(v6.matches(&h("::1"), 443));
        let v6p: HostRule = "[::1]:8080".parse().unwrap();
        assert_eq!(v6p.to_string(), "[::1]:8080");
        assert!(v6p.matches(&h("::1"), 8080));
        assert_eq!("::1".parse::<HostRule>().unwrap().port, None);
    }

    #[test]
    fn bad_rules_say_why() {
        for (bad, says) in [
            ("*", "--network full"),
            ("", "name a host"),
            ("*.com", "two labels"),
            ("a.*.com", "leading"),
            ("example.com:0", "not a port"),
            ("example.com:99999", "not a port"),
            ("example.com:x", "not a port"),
            ("https://x.com", "scheme"),
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
                headers: vec!["x-api-key".into()],
            }],
            logins: vec![],
            ask: true,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<EgressSpec>(&json).unwrap(), spec);
        assert!(serde_json::from_str::<EgressSpec>(r#"{"allow":["*"]}"#).is_err());
        // A binding stored before headers were declared decodes, with the provider's headers.
        let old: SecretBinding = serde_json::from_str(
            r#"{"env":"ANTHROPIC_API_KEY","hosts":["api.anthropic.com"],"placeholder":"p"}"#,
        )
        .unwrap();
        assert_eq!(old.auth_headers(), vec!["x-api-key".to_string(), "authorization".to_string()]);
        assert_eq!(check_header_name("X-Api-Key").unwrap(), "x-api-key");
        assert!(check_header_name("bad header").is_err());
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
