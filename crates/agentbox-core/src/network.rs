use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum NetworkMode {
    /// A private network namespace with only loopback: nothing outside is reachable.
    #[default]
    None,
    /// The host's network namespace. Host loopback services are reachable; use with care.
    Full,
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "full" | "host" => Ok(Self::Full),
            other => Err(format!("unknown network mode '{other}': use 'none' or 'full'")),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Full => "full",
        })
    }
}
