//! Name resolution for the proxy: the sandbox never resolves names itself (it has no route out);
//! the proxy does, and checks every address it would connect to.
//!
//! Pins (`[network.resolve]` in config.toml: `"host" = "ip:port"`) fix a host's address, like
//! curl's `--connect-to`: for split-horizon setups, and for pointing a provider's host at a local
//! stand-in. A pin is the operator's explicit choice, made in a file only they can write, so its
//! address is not checked.

use std::collections::HashMap;
use std::net::SocketAddr;

use agentbox_core::Host;

use crate::ProxyError;

/// A candidate address, and whether the operator pinned it (overrides skip the address check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub pinned: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<String, SocketAddr>,
}

impl Resolver {
    /// Pins from `[network.resolve]`: host name -> `ip:port`.
    pub fn with_pins(pins: &std::collections::BTreeMap<String, String>) -> Result<Self, ProxyError> {
        let mut overrides = HashMap::new();
        for (host, addr) in pins {
            let bad = || {
                ProxyError::Config(format!(
                    "[network.resolve] \"{host}\" = \"{addr}\": use \"NAME\" = \"IP:PORT\""
                ))
            };
            let host = match Host::parse(host).map_err(|_| bad())? {
                Host::Name(n) => n,
                Host::Ip(_) => return Err(bad()),
            };
            overrides.insert(host, addr.parse().map_err(|_| bad())?);
        }
        Ok(Self { overrides })
    }

    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<Candidate>, String> {
        match host {
            Host::Ip(ip) => Ok(vec![Candidate { addr: SocketAddr::new(*ip, port), pinned: false }]),
            Host::Name(name) => {
                if let Some(addr) = self.overrides.get(name) {
                    return Ok(vec![Candidate { addr: *addr, pinned: true }]);
                }
                let found = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| format!("cannot resolve {name}: {e}"))?;
                Ok(found.map(|addr| Candidate { addr, pinned: false }).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(items: &[(&str, &str)]) -> Result<Resolver, ProxyError> {
        Resolver::with_pins(&items.iter().map(|(h, a)| (h.to_string(), a.to_string())).collect())
    }

    #[test]
    fn pins_parse() {
        let r = pins(&[("api.example.com", "127.0.0.1:8443"), ("Git.Example.com.", "[::1]:9")]).unwrap();
        assert_eq!(r.overrides["api.example.com"], "127.0.0.1:8443".parse().unwrap());
        assert_eq!(r.overrides["git.example.com"], "[::1]:9".parse().unwrap());
        for (h, a) in
            [("x y", "1.2.3.4:5"), ("a.com", "1.2.3.4"), ("1.2.3.4", "1.2.3.4:5"), ("a.com", "host:1")]
        {
            assert!(pins(&[(h, a)]).is_err(), "{h} {a}");
        }
    }
}
