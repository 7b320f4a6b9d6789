use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What isolates the agent from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Linux namespaces, Landlock, seccomp and limits around the agent's own processes.
    #[default]
    Ns,
    /// A QEMU virtual machine with its own kernel; QEMU itself runs inside an `ns` sandbox, and
    /// `--memory` / `--cpus` size the guest.
    Vm,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ns" => Ok(Self::Ns),
            "vm" => Ok(Self::Vm),
            other => {
                Err(format!("unknown backend '{other}': use 'ns' (namespaces) or 'vm' (a QEMU microVM)"))
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ns => "ns",
            Self::Vm => "vm",
        })
    }
}

/// Guest memory when `--memory` is not given.
pub const VM_DEFAULT_MEMORY: u64 = 1 << 30;
/// The smallest guest that boots a distribution kernel with agentbox's initramfs.
pub const VM_MIN_MEMORY: u64 = 128 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for b in [Backend::Ns, Backend::Vm] {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
        let e = "kvm".parse::<Backend>().unwrap_err();
        assert!(e.contains("'kvm'") && e.contains("'vm'"), "{e}");
    }
}
