//! Profiles on this host: built-in and user files, and what a profile adds to a spawn.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::tree::{CopyOptions, Dir, Limits, TreeError};
use agentbox_core::{is_below, EnvArg, MountArg, Profile, BUILTIN_PROFILES, SANDBOX_HOME};

use crate::home::Home;
use crate::secrets::Secrets;

/// Added to an agent's own instructions file, so the agent knows where it runs.
pub const SANDBOX_NOTE: &str = "\n\n## Sandbox\n\nYou are running inside an agentbox sandbox. Only the \
workspace and your home directory are writable and the network may be restricted. Do not try to \
leave the sandbox, weaken its protections or look for credentials; if something you need is \
blocked, stop and ask the user.\n";

pub fn user_dir(home: &Home) -> PathBuf {
    home.root.join("profiles")
}

/// A profile by name: the user's file wins over the built-in one.
pub fn load(home: &Home, name: &str) -> Result<Profile> {
    agentbox_core::validate_name(name)
        .map_err(|_| crate::Error::invalid(format!("invalid profile name '{name}'")))?;
    let file = user_dir(home).join(format!("{name}.toml"));
    if file.exists() {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(Profile::parse(name, &text, &file.display().to_string())?);
    }
    match Profile::builtin(name) {
        Some(p) => Ok(p?),
        None => crate::bail!(crate::Error::not_found(format!(
            "no profile named '{name}' (see `agentbox profiles`)"
        ))),
    }
}

/// Every profile, with where it comes from.
pub fn all(home: &Home) -> Result<Vec<(Profile, String)>> {
    let mut out: Vec<(Profile, String)> = Vec::new();
    let mut names: Vec<String> = BUILTIN_PROFILES.iter().map(|(n, _)| n.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(user_dir(home)) {
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = file.strip_suffix(".toml") {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
    }
    for n in names {
        let user = user_dir(home).join(format!("{n}.toml"));
        let origin = if user.exists() { user.display().to_string() } else { "built-in".to_string() };
        match load(home, &n) {
            Ok(p) => out.push((p, origin)),
            // One broken file is reported and skipped: the other profiles still work.
            Err(e) => agentbox_core::note(format_args!("skipping profile {n}: {e}")),
        }
    }
    Ok(out)
}

/// `~/x` -> (host `$HOME/x`, sandbox `/home/agent/x`); `/abs` -> (same, same).
pub fn map_path(p: &str, host_home: &Path) -> (PathBuf, PathBuf) {
    match p.strip_prefix("~/") {
        Some(rest) => (host_home.join(rest), Path::new(SANDBOX_HOME).join(rest)),
        None => (PathBuf::from(p), PathBuf::from(p)),
    }
}

/// Whether a missing config path should be created as a directory: `~/.claude` yes,
/// `~/.claude.json` no (a dot after the leading one means a file).
fn looks_like_dir(p: &Path) -> bool {
    p.file_name().map(|n| !n.to_string_lossy().trim_start_matches('.').contains('.')).unwrap_or(false)
}

/// Most a profile's config copy may hold; beyond it the path is not copied (with a warning).
const SEED_LIMITS: Limits = Limits { max_bytes: 256 << 20, max_entries: 50_000 };

/// Where a credential was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Environment(String),
    Stored(String),
}

pub fn find_credential(key: &str, secrets: &Secrets) -> Option<Found> {
    if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
        return Some(Found::Environment(v));
    }
    secrets.get(key).map(|v| Found::Stored(v.to_string()))
}

/// The profile's `seed_skip` minus what the person opted back in (`[profiles.NAME] seed`).
pub fn skipped(profile: &Profile, opted_in: &[String]) -> Vec<String> {
    profile.seed_skip.iter().filter(|p| !opted_in.iter().any(|o| is_below(p, o))).cloned().collect()
}

/// Whether a login file of the profile exists on the host and is copied into agents (the person
/// opted it in): only then does the agent start logged in.
pub fn login_given(profile: &Profile, host_home: &Path, opted_in: &[String]) -> bool {
    let skip = skipped(profile, opted_in);
    profile
        .auth_markers
        .iter()
        .any(|m| map_path(m, host_home).0.exists() && !skip.iter().any(|s| is_below(m, s)))
}

/// A login file of the profile that exists on the host but is not copied into agents.
pub fn login_withheld(profile: &Profile, host_home: &Path, opted_in: &[String]) -> Option<String> {
    let skip = skipped(profile, opted_in);
    profile
        .auth_markers
        .iter()
        .find(|m| map_path(m, host_home).0.exists() && skip.iter().any(|s| is_below(m, s)))
        .cloned()
}

/// What a profile adds to a spawn.
#[derive(Debug, Default)]
pub struct Applied {
    pub command: Vec<OsString>,
    pub mounts: Vec<MountArg>,
    pub env: Vec<EnvArg>,
    pub hidden: Vec<PathBuf>,
    /// The credentials found on this host, one per satisfied group (names only: in `proxy` mode
    /// the sandbox gets placeholders, in `full` mode the caller's values).
    pub credentials: Vec<String>,
    pub warnings: Vec<String>,
}

/// Resolves `profile` for an agent whose home directory on the host is `agent_home`: read-only
/// paths are bound from the host; `read_write` paths are copied into the agent's home (seeded),
/// without `seed_skip` (minus `opted_in`), so the agent's config is its own and nothing it writes
/// there reaches the host. The instructions file in the copy gets the sandbox note appended.
pub fn apply(
    profile: &Profile,
    host_home: &Path,
    secrets: &Secrets,
    agent_home: &Path,
    opted_in: &[String],
) -> Result<Applied> {
    let mut out =
        Applied { command: profile.command.iter().map(OsString::from).collect(), ..Default::default() };
    for p in &profile.read_only {
        let (host, inside) = map_path(p, host_home);
        if host.exists() {
            out.mounts.push(MountArg { source: host, target: Some(inside), writable: false });
        }
    }
    out.hidden = profile.hide.iter().map(|p| map_path(p, host_home).1).collect();
    let skip = skipped(profile, opted_in);
    for p in &profile.read_write {
        if let Some(w) = seed(p, host_home, agent_home, &skip)? {
            out.warnings.push(w);
        }
    }

    for group in &profile.credentials {
        match group.iter().find(|k| crate::egress::secret_present(k, secrets)) {
            Some(k) => out.credentials.push(k.clone()),
            None if login_given(profile, host_home, opted_in) => {}
            None => {
                let mut msg = format!(
                    "profile {} needs one of {} and finds none (nor a login): {}",
                    profile.name,
                    group.join(", "),
                    profile.login_hint
                );
                if let Some(m) = login_withheld(profile, host_home, opted_in) {
                    msg.push_str(&format!(
                        " (your login {m} is not copied into agents; to copy it, add `seed = [\"{m}\"]` \
                         under [profiles.{}] in config.toml)",
                        profile.name
                    ));
                }
                out.warnings.push(msg);
            }
        }
    }

    if let Some(ins) = &profile.instructions {
        let (host_cfg, inside_cfg) = map_path(&ins.config_dir, host_home);
        let copy = agent_path(&ins.config_dir, agent_home);
        if copy.is_dir() {
            // The person's own instructions, read without following a link, plus the note.
            let original = match Dir::open(&host_cfg).and_then(|d| d.open_file(OsStr::new(&ins.file))) {
                Ok(Some((f, _))) => {
                    let mut text = String::new();
                    f.take(1 << 20).read_to_string(&mut text).ok();
                    text
                }
                _ => String::new(),
            };
            let merged = copy.join(&ins.file);
            crate::tree::remove_tree(&merged).ok();
            let mut f = Dir::open(&copy)?.create_file(OsStr::new(&ins.file))?;
            f.write_all(format!("{original}{SANDBOX_NOTE}").as_bytes())?;
            out.env.push(EnvArg::Set(ins.config_dir_env.clone(), inside_cfg.to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

/// `~/x` -> `AGENT_HOME/x`.
fn agent_path(p: &str, agent_home: &Path) -> PathBuf {
    agent_home.join(p.trim_start_matches("~/"))
}

/// Copies the host's `p` into the agent's home, leaving out `skip`. Returns a warning when it
/// could not be copied (too large); the agent then starts with an empty one.
fn seed(p: &str, host_home: &Path, agent_home: &Path, skip: &[String]) -> Result<Option<String>> {
    let (host, _) = map_path(p, host_home);
    let dest = agent_path(p, agent_home);
    if let Some(parent) = dest.parent() {
        crate::tree::agent_dir(parent)?;
    }
    if skip.iter().any(|s| is_below(p, s)) {
        if looks_like_dir(&host) {
            crate::tree::agent_dir(&dest)?;
        }
        return Ok(None);
    }
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(_) => {
            if looks_like_dir(&host) {
                crate::tree::agent_dir(&dest)?;
            }
            return Ok(None);
        }
    };
    let opts = CopyOptions { owner: crate::tree::agent_owner(), limits: SEED_LIMITS, ..Default::default() };
    if meta.is_dir() {
        // Paths under `p` that are skipped, relative to it.
        let skip_rel: Vec<PathBuf> = skip
            .iter()
            .filter(|s| is_below(s, p) && *s != p)
            .map(|s| PathBuf::from(&s[p.trim_end_matches('/').len() + 1..]))
            .collect();
        let keep = |rel: &Path| !skip_rel.iter().any(|s| rel.starts_with(s));
        match crate::tree::copy_tree_with(&host, &dest, &opts, &keep) {
            Ok(_) => Ok(None),
            Err(e @ (TreeError::TooLarge { .. } | TreeError::TooMany { .. } | TreeError::TooDeep { .. })) => {
                crate::tree::remove_tree(&dest)?;
                crate::tree::agent_dir(&dest)?;
                Ok(Some(format!("{p} is not copied into the agent: {e}")))
            }
            Err(e) => Err(e).with_context(|| format!("copying {} into the agent's home", host.display())),
        }
    } else if meta.is_file() {
        // A single file (`~/.tool.json`): opened without following a link, copied sparse.
        let (Some(parent), Some(name)) = (host.parent(), host.file_name()) else { return Ok(None) };
        let Some((src, st)) = Dir::open(parent)?.open_file(name)? else { return Ok(None) };
        let dest_parent = dest.parent().unwrap_or(agent_home);
        let out = Dir::open(dest_parent)?.create_file(OsStr::new(name))?;
        if crate::tree::copy_file(&src, &out, st.st_size as u64, SEED_LIMITS.max_bytes).is_err() {
            drop(out);
            let _ = std::fs::remove_file(&dest);
            return Ok(Some(format!("{p} is not copied into the agent: larger than 256 MiB")));
        }
        if let Some(o) = opts.owner {
            nix::unistd::fchown(&out, Some(o.uid.into()), Some(o.gid.into()))?;
        }
        Ok(None)
    } else {
        // A symlink or something else: not followed, not copied.
        Ok(Some(format!("{p} is a link or special file on the host; the agent starts without it")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_into_the_agent_home() {
        let (h, s) = map_path("~/.claude", Path::new("/home/u"));
        assert_eq!((h, s), (PathBuf::from("/home/u/.claude"), PathBuf::from("/home/agent/.claude")));
        let (h, s) = map_path("/opt/tool", Path::new("/home/u"));
        assert_eq!((h, s), (PathBuf::from("/opt/tool"), PathBuf::from("/opt/tool")));
        assert!(looks_like_dir(Path::new("/h/.claude")));
        assert!(!looks_like_dir(Path::new("/h/.claude.json")));
        assert!(looks_like_dir(Path::new("/h/.config/opencode")));
    }
}
