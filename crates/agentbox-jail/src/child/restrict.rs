//! The process restrictions applied after the filesystem is built and before the command runs.
//! Order matters: rlimits and Landlock first (Landlock also sets no_new_privs), then capabilities
//! (needs CAP_SETPCAP for the bounding set), then seccomp last, because its filter refuses calls the
//! earlier steps do not need but later code must never make.

use std::path::PathBuf;

use caps::CapSet;
use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::BpfProgram;

use super::Failure;
use crate::plan::LandlockPolicy;

/// The newest ABI whose filesystem rights agentbox asks for; older kernels get what they have.
const LANDLOCK_ABI: ABI = ABI::V6;

fn failure(step: &str, errno: Errno, message: impl Into<String>) -> Failure {
    Failure { step: step.into(), errno, message: message.into() }
}

pub(super) fn rlimits(limits: &[(Resource, u64)]) -> Result<(), Failure> {
    for (res, value) in limits {
        setrlimit(*res, *value, *value).map_err(|e| failure(&format!("setrlimit {res:?}"), e, e.desc()))?;
    }
    Ok(())
}

fn existing(paths: &[PathBuf]) -> Vec<PathFd> {
    paths.iter().filter_map(|p| PathFd::new(p).ok()).collect()
}

/// Read and execute beneath `read_only`, everything beneath `read_write`; no other access. Fails
/// if the kernel cannot enforce any filesystem restriction. The abstract-socket and signal scopes
/// are applied where the kernel has them (ABI 6+).
pub(super) fn landlock(policy: &LandlockPolicy) -> Result<(), Failure> {
    let err = |e: landlock::RulesetError| failure("landlock", Errno::EPERM, e.to_string());
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(err)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(err)?
        .create()
        .map_err(err)?;
    for fd in existing(&policy.read_only) {
        ruleset = ruleset.add_rule(PathBeneath::new(fd, read)).map_err(err)?;
    }
    for fd in existing(&policy.read_write) {
        ruleset = ruleset.add_rule(PathBeneath::new(fd, all)).map_err(err)?;
    }
    let status = ruleset.no_new_privs(true).restrict_self().map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(failure("landlock", Errno::ENOSYS, "the kernel does not enforce Landlock"));
    }
    Ok(())
}

/// Empties every capability set, bounding and ambient included, so nothing can be regained by
/// exec (a setuid binary, a file capability, or uid 0 inside).
pub(super) fn drop_capabilities() -> Result<(), Failure> {
    let err = |step: &str| {
        let step = step.to_string();
        move |e: caps::errors::CapsError| failure(&step, Errno::EPERM, e.to_string())
    };
    // PR_CAPBSET_DROP for every capability the kernel knows, without probing each one first.
    agentbox_sys::drop_bounding_set().map_err(|e| failure("drop bounding capabilities", e, e.desc()))?;
    caps::clear(None, CapSet::Ambient).map_err(err("drop ambient capabilities"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("drop inheritable capabilities"))?;
    caps::clear(None, CapSet::Effective).map_err(err("drop effective capabilities"))?;
    caps::clear(None, CapSet::Permitted).map_err(err("drop permitted capabilities"))?;
    Ok(())
}

pub(super) fn seccomp(program: &BpfProgram) -> Result<(), Failure> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| failure("no_new_privs", e, e.desc()))?;
    crate::seccomp::install(program).map_err(|e| failure("seccomp", Errno::EINVAL, e.to_string()))
}
