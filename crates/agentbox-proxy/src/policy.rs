//! The decision for one destination, from the agent's egress spec plus grants made while it runs.

use std::net::IpAddr;

use agentbox_core::{EgressSpec, Host, HostRule};

use crate::addr::non_public;
use crate::resolve::Candidate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; `intercept` when the host carries a credential (TLS is terminated and the
    /// placeholder swapped), otherwise the connection is tunnelled untouched.
    Allow {
        intercept: bool,
    },
    /// Wait for an operator's decision (`--ask`).
    Ask,
    Deny(String),
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    spec: EgressSpec,
    /// Grants for a single connection each (`agentbox allow --once`).
    once: Vec<HostRule>,
}

impl Policy {
    pub fn new(spec: EgressSpec) -> Self {
        Self { spec, once: Vec::new() }
    }

    pub fn grant(&mut self, rule: HostRule, once: bool) {
        if once {
            self.once.push(rule);
        } else if !self.spec.allow.contains(&rule) {
            self.spec.allow.push(rule);
        }
    }

    /// Takes `rule` off the allowlist and the one-shot grants; whether it was on either.
    pub fn revoke(&mut self, rule: &HostRule) -> bool {
        let before = self.spec.allow.len() + self.once.len();
        self.spec.allow.retain(|r| r != rule);
        self.once.retain(|r| r != rule);
        self.spec.allow.len() + self.once.len() != before
    }

    /// Whether a secret is bound to `host` (on any port).
    pub fn carries_secret(&self, host: &Host) -> bool {
        self.spec.secrets.iter().any(|s| s.hosts.iter().any(|r| r.matches_host(host)))
            || self.spec.logins.iter().any(|l| l.involves(host))
    }

    /// Decides `host:port`; a matching one-shot grant is used up.
    pub fn decide(&mut self, host: &Host, port: u16) -> Verdict {
        if self.spec.secrets.iter().any(|s| s.hosts.iter().any(|r| r.matches(host, port))) {
            return Verdict::Allow { intercept: true };
        }
        let login_host = |r: &HostRule| r.matches(host, port);
        if self
            .spec
            .logins
            .iter()
            .any(|l| l.hosts.iter().any(login_host) || l.token_endpoints.iter().any(|(r, _)| login_host(r)))
        {
            return Verdict::Allow { intercept: true };
        }
        if self.spec.allow.iter().any(|r| r.matches(host, port)) {
            return Verdict::Allow { intercept: false };
        }
        if let Some(i) = self.once.iter().position(|r| r.matches(host, port)) {
            self.once.remove(i);
            return Verdict::Allow { intercept: false };
        }
        if self.spec.ask {
            return Verdict::Ask;
        }
        let named = self.spec.allow.iter().chain(&self.once).any(|r| r.matches_host(host))
            || self.carries_secret(host);
        if named {
            return Verdict::Deny(format!(
                "{host} is allowed on ports 443 and 80 only, not {port} (allow this port with --allow {host}:{port})"
            ));
        }
        Verdict::Deny(match host {
            Host::Ip(ip) => format!(
                "{ip} is an IP address; addresses are refused unless allowed one by one (--allow {ip})"
            ),
            Host::Name(n) => format!("{n} is not in the allowlist (allow it with --allow {n})"),
        })
    }

    /// Keeps the candidates that may be connected to: public addresses, addresses the policy
    /// names, and pinned ones. Refuses with the reason when none is left.
    pub fn check_addresses(&self, host: &Host, found: Vec<Candidate>) -> Result<Vec<Candidate>, String> {
        let mut refused = None;
        let mut ok = Vec::new();
        for c in found {
            match non_public(c.addr.ip()) {
                Some(why) if !c.pinned && !self.names_address(c.addr.ip()) => {
                    refused.get_or_insert((c.addr.ip(), why));
                }
                _ => ok.push(c),
            }
        }
        match (ok.is_empty(), refused) {
            (false, _) => Ok(ok),
            (true, Some((ip, why))) => Err(format!(
                "{host} resolves to {ip}, a {why} address, which is refused (allow the address itself with --allow {ip})"
            )),
            (true, None) => Err(format!("{host} has no address")),
        }
    }

    fn names_address(&self, ip: IpAddr) -> bool {
        self.spec.allow.iter().any(|r| r.matches_host(&Host::Ip(ip)))
    }
}

#[cfg(test)]
mod tests {
    use agentbox_core::SecretBinding;

    use super::*;

    fn spec() -> EgressSpec {
        EgressSpec {
            allow: vec!["*.npmjs.org".parse().unwrap(), "10.0.0.5".parse().unwrap()],
            secrets: vec![SecretBinding {
                env: "KEY".into(),
                hosts: vec!["api.example.com".parse().unwrap()],
                placeholder: "ph".into(),
                headers: vec![],
            }],
            logins: vec![],
            ask: false,
        }
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn cand(s: &str) -> Candidate {
        Candidate { addr: format!("{s}:443").parse().unwrap(), pinned: false }
    }

    #[test]
    fn decisions() {
        let mut p = Policy::new(spec());
        assert_eq!(p.decide(&host("api.example.com"), 443), Verdict::Allow { intercept: true });
        assert_eq!(p.decide(&host("registry.npmjs.org"), 443), Verdict::Allow { intercept: false });
        assert!(
            matches!(p.decide(&host("evil.com"), 443), Verdict::Deny(m) if m.contains("--allow evil.com"))
        );
        assert!(matches!(p.decide(&host("1.2.3.4"), 443), Verdict::Deny(m) if m.contains("IP address")));
        assert_eq!(p.decide(&host("10.0.0.5"), 443), Verdict::Allow { intercept: false });
        // An allowed host on another port is refused, with the rule that would allow it.
        assert!(
            matches!(p.decide(&host("registry.npmjs.org"), 22), Verdict::Deny(m) if m.contains("--allow registry.npmjs.org:22"))
        );
        assert!(matches!(p.decide(&host("api.example.com"), 8443), Verdict::Deny(_)));

        p.grant("evil.com".parse().unwrap(), true);
        assert_eq!(p.decide(&host("evil.com"), 443), Verdict::Allow { intercept: false });
        assert!(matches!(p.decide(&host("evil.com"), 443), Verdict::Deny(_)), "a one-shot grant is used up");
        p.grant("evil.com".parse().unwrap(), false);
        assert_eq!(p.decide(&host("evil.com"), 443), Verdict::Allow { intercept: false });
        assert_eq!(p.decide(&host("evil.com"), 443), Verdict::Allow { intercept: false });

        let mut asking = Policy::new(EgressSpec { ask: true, ..spec() });
        assert_eq!(asking.decide(&host("other.org"), 443), Verdict::Ask);
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let p = Policy::new(spec());
        let h = host("registry.npmjs.org");
        let e = p.check_addresses(&h, vec![cand("127.0.0.1")]).unwrap_err();
        assert!(e.contains("loopback") && e.contains("--allow 127.0.0.1"), "{e}");
        assert!(p.check_addresses(&h, vec![cand("169.254.169.254")]).unwrap_err().contains("link-local"));
        // Public ones survive, refused ones are dropped.
        let ok = p.check_addresses(&h, vec![cand("10.9.9.9"), cand("1.1.1.1")]).unwrap();
        assert_eq!(ok, vec![cand("1.1.1.1")]);
        // An address the policy names, and a pinned one, pass.
        assert!(p.check_addresses(&h, vec![cand("10.0.0.5")]).is_ok());
        let pinned = Candidate { pinned: true, ..cand("127.0.0.1") };
        assert!(p.check_addresses(&h, vec![pinned]).is_ok());
        assert!(p.check_addresses(&h, vec![]).is_err());
    }

    #[test]
    fn a_revoked_rule_is_decided_as_if_never_granted() {
        let mut p = Policy::new(spec());
        let host = Host::parse("api.other.org").unwrap();
        p.grant("api.other.org".parse().unwrap(), false);
        assert_eq!(p.decide(&host, 443), Verdict::Allow { intercept: false });
        assert!(p.revoke(&"api.other.org".parse().unwrap()));
        assert!(!p.revoke(&"api.other.org".parse().unwrap()));
        // A one-shot grant not used yet is taken back too.
        p.grant("api.other.org".parse().unwrap(), true);
        assert!(p.revoke(&"api.other.org".parse().unwrap()));
        assert!(matches!(p.decide(&host, 443), Verdict::Deny(_)));
        // A host a secret is bound to stays reachable: the secret's binding allows it.
        let _ = p.revoke(&"api.example.com".parse().unwrap());
        assert_eq!(
            p.decide(&Host::parse("api.example.com").unwrap(), 443),
            Verdict::Allow { intercept: true }
        );
    }
}
