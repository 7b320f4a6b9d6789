use serde::{Deserialize, Serialize};

use crate::{format_size, parse_size, SpecError};

/// Resource limits for the whole sandboxed process tree.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Maximum number of processes (tasks).
    pub pids: Option<u64>,
    /// CPU bandwidth in cores (0.5 = half a core).
    pub cpus: Option<f64>,
}

const MIN_MEMORY: u64 = 4 << 20;
const MAX_PIDS: u64 = 4_194_304;

impl Limits {
    pub fn parse_memory(s: &str) -> Result<u64, SpecError> {
        let bytes = parse_size(s)?;
        if bytes < MIN_MEMORY {
            return Err(SpecError::Limit {
                what: "--memory",
                value: s.to_string(),
                reason: "below the minimum of 4M",
            });
        }
        Ok(bytes)
    }

    pub fn parse_pids(s: &str) -> Result<u64, SpecError> {
        let err = |reason| SpecError::Limit { what: "--pids", value: s.to_string(), reason };
        let n: u64 = s.trim().parse().map_err(|_| err("give a whole number of processes"))?;
        // The sandbox's init is one process and the command another: 1 could never start it.
        if !(2..=MAX_PIDS).contains(&n) {
            return Err(err("must be between 2 (the sandbox's init and the command) and 4194304"));
        }
        Ok(n)
    }

    pub fn parse_cpus(s: &str) -> Result<f64, SpecError> {
        let err = |reason| SpecError::Limit { what: "--cpus", value: s.to_string(), reason };
        let n: f64 = s.trim().parse().map_err(|_| err("give a number of cores such as 0.5 or 2"))?;
        if !n.is_finite() || !(0.01..=4096.0).contains(&n) {
            return Err(err("must be between 0.01 and 4096"));
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.cpus.is_none()
    }

    /// A short human summary, e.g. `memory=512M pids=100`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(format!("memory={}", format_size(m)));
        }
        if let Some(p) = self.pids {
            parts.push(format!("pids={p}"));
        }
        if let Some(c) = self.cpus {
            parts.push(format!("cpus={c}"));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(Limits::parse_memory("64M").unwrap(), 64 << 20);
        assert!(Limits::parse_memory("1M").is_err());
        assert_eq!(Limits::parse_pids("100").unwrap(), 100);
        assert!(Limits::parse_pids("0").is_err());
        assert!(Limits::parse_pids("1").unwrap_err().to_string().contains("between 2"));
        assert!(Limits::parse_pids("-3").is_err());
        assert_eq!(Limits::parse_cpus("0.5").unwrap(), 0.5);
        assert!(Limits::parse_cpus("0").is_err());
        assert!(Limits::parse_cpus("NaN").is_err());
        assert!(Limits::parse_cpus("inf").is_err());
    }
}
