//! Name resolution for the proxy: the sandbox never resolves names itself (it has no route out);
//! the proxy does, and checks every address it would connect to.
//!
//! Overrides (`AGENTBOX_PROXY_RESOLVE=host=ip:port,...`) pin a host to an address, like curl's
//! `--connect-to`: for split-horizon setups, and for tests that point provider hosts at local
//! servers. An override is the operator's explicit choice, so its address is not checked.

use std::collections::HashMap;
use std::net::SocketAddr;

use agentbox_core::Host;

use crate::ProxyError;

pub const RESOLVE_ENV: &str = "AGENTBOX_PROXY_RESOLVE";

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
    /// Parses `host=ip:port[,host=ip:port...]`.
    pub fn with_overrides(spec: &str) -> Result<Self, ProxyError> {
        let mut overrides = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || ProxyError::Config(format!("{RESOLVE_ENV}: '{item}' is not HOST=IP:PORT"));
            let (host, addr) = item.split_once('=').ok_or_else(bad)?;
            let host = match Host::parse(host).map_err(|_| bad())? {
                Host::Name(n) => n,
                Host::Ip(_) => return Err(bad()),
            };
            overrides.insert(host, addr.parse().map_err(|_| bad())?);
        }
        Ok(Self { overrides })
    }

    /// The overrides named in the environment, if any.
    pub fn from_env() -> Result<Self, ProxyError> {
        match std::env::var(RESOLVE_ENV) {
            Ok(spec) => Self::with_overrides(&spec),
            Err(_) => Ok(Self::default()),
        }
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

    #[test]
    fn overrides_parse() {
        let r = Resolver::with_overrides("api.example.com=127.0.0.1:8443, Git.Example.com.=[::1]:9").unwrap();
        assert_eq!(r.overrides["api.example.com"], "127.0.0.1:8443".parse().unwrap());
        assert_eq!(r.overrides["git.example.com"], "[::1]:9".parse().unwrap());
        for bad in ["x", "a.com=1.2.3.4", "1.2.3.4=1.2.3.4:5", "a.com=host:1"] {
            assert!(Resolver::with_overrides(bad).is_err(), "{bad}");
        }
    }
}
