use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The port of the egress proxy on the loopback of every `proxy`-mode sandbox. Each sandbox has
/// its own network namespace, so they all use the same one.
pub const PROXY_PORT: u16 = 3128;

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum NetworkMode {
    /// A private network namespace with only loopback: nothing outside is reachable.
    #[default]
    None,
    /// A private network namespace with only loopback, where an HTTP proxy served from outside
    /// the sandbox lets requests out to allowed hosts only (see [`crate::EgressSpec`]).
    Proxy,
    /// The host's network namespace. Host loopback services are reachable; use with care.
    Full,
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "proxy" => Ok(Self::Proxy),
            "full" | "host" => Ok(Self::Full),
            other => Err(format!("unknown network mode '{other}': use 'none', 'proxy' or 'full'")),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Proxy => "proxy",
            Self::Full => "full",
        })
    }
}
