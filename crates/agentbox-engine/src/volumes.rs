//! Volumes: named directories agentbox keeps in `AGENTBOX_HOME/volumes/NAME`, bound into agents
//! with `-v NAME:/path[:ro]`, shared by every agent that names them and kept across their lives.
//!
//! A volume's files are agent-written, so agentbox treats them like a workspace's: the directory
//! is the agents' (mode 0700, the agents' host id when agentbox runs as root), `volume rm`
//! removes it through descriptors without following a link, and a volume an agent still binds
//! (running or stopped) is not removed.

use std::path::{Path, PathBuf};

use agentbox_core::{MountArg, SandboxSpec};
use agentbox_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agents;
use crate::error::{Context, Error, Result};
use crate::home::Home;
use crate::tree;

/// A volume as `volume ls` and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    pub name: String,
    /// Bytes of its regular files.
    pub size: u64,
    /// The agents (running or not) it is bound into.
    pub used_by: Vec<String>,
}

fn root(home: &Home) -> PathBuf {
    home.root.join("volumes")
}

/// Where volume `name` lives (whether or not it exists).
pub fn path(home: &Home, name: &str) -> PathBuf {
    root(home).join(name)
}

fn check_name(name: &str) -> Result<()> {
    agentbox_core::validate_name(name).map_err(|_| {
        Error::invalid(format!("'{name}' is not a volume name: use a-z, 0-9 and '-' (up to 63)"))
    })
}

/// Whether a `-v` source names a volume: a plain name (no '/'), as docker reads `-v data:/data`.
/// A directory is written with a '/' (`./data`, `/srv/data`).
pub fn is_volume_source(source: &Path) -> bool {
    let s = source.as_os_str().as_encoded_bytes();
    !s.is_empty() && !s.contains(&b'/') && s != b"." && s != b".."
}

fn exists(home: &Home, name: &str) -> bool {
    std::fs::symlink_metadata(path(home, name)).is_ok_and(|m| m.is_dir())
}

/// Makes volume `name`; an existing one is an error.
pub fn create(home: &Home, name: &str) -> Result<VolumeView> {
    check_name(name)?;
    crate::home::private_dir(&root(home))?;
    let dir = path(home, name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::conflict(format!("volume '{name}' exists already")))
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    tree::agent_dir(&dir)?;
    Ok(VolumeView { name: name.to_string(), size: 0, used_by: Vec::new() })
}

/// A `-v` request with its volume resolved: a plain-name source becomes the volume's directory,
/// made on first use as docker does. Other sources are left alone.
pub fn resolve(home: &Home, m: &MountArg) -> Result<MountArg> {
    if !is_volume_source(&m.source) {
        return Ok(m.clone());
    }
    check(m)?;
    let name = m.source.to_string_lossy().into_owned();
    if !exists(home, &name) {
        match create(home, &name) {
            // Made by another spawn meanwhile: used as it is.
            Err(e) if e.kind() != crate::error::Kind::Conflict => return Err(e),
            _ => {}
        }
    }
    Ok(MountArg { source: path(home, &name), ..m.clone() })
}

/// Whether a `-v` request naming a volume can be carried out: a valid name, and a path in the
/// sandbox to bind it at.
pub fn check(m: &MountArg) -> Result<()> {
    let name = m.source.to_string_lossy();
    check_name(&name)?;
    if m.target.is_none() {
        return Err(Error::invalid(format!(
            "-v {name}: a volume needs a path in the sandbox (-v {name}:/data); a directory is written with a '/' (./{name})"
        )));
    }
    Ok(())
}

/// The agents whose sandbox binds `dir`, running or not (a stopped one binds it again when it
/// starts, and `cp` reads it), as docker counts a volume's containers.
fn users(store: &Store, dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for rec in agents::all(store)? {
        let Ok(spec) = SandboxSpec::decode(&rec.spec) else { continue };
        if spec.mounts.iter().any(|m| m.source == dir) {
            out.push(rec.name);
        }
    }
    Ok(out)
}

/// Every volume, by name.
pub fn list(home: &Home, store: &Store) -> Result<Vec<VolumeView>> {
    let mut names: Vec<String> = match std::fs::read_dir(root(home)) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| agentbox_core::validate_name(n).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root(home).display())),
    };
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let dir = path(home, &name);
            Ok(VolumeView { size: crate::measure::disk_bytes(&dir), used_by: users(store, &dir)?, name })
        })
        .collect()
}

/// Removes volume `name` and its files; refused while a live agent uses it.
pub fn remove(home: &Home, store: &Store, name: &str) -> Result<()> {
    check_name(name)?;
    let dir = path(home, name);
    if !exists(home, name) {
        return Err(Error::not_found(format!("no volume named '{name}' (see `agentbox volume ls`)")));
    }
    let users = users(store, &dir)?;
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "volume '{name}' is in use by {}: remove them first (`agentbox rm`)",
            users.join(", ")
        )));
    }
    tree::remove_tree(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_volumes_and_paths_are_not() {
        for v in ["data", "my-vol", "x1"] {
            assert!(is_volume_source(Path::new(v)), "{v}");
        }
        for p in ["./data", "/srv/data", "data/sub", ".", "..", ""] {
            assert!(!is_volume_source(Path::new(p)), "{p}");
        }
    }
}
