//! Spawning an agent: its directories and spec from a [`SpawnSpec`], its record, and its
//! supervisor (see [`crate::start`]); and the `__spawn` role that does this
//! for a process with threads (the server, the task runner), since a sandbox must be cloned from
//! a single-threaded process.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use agentbox_core::{
    validate_name, Backend, EgressSpec, EnvArg, Field, HomeSpec, NetworkMode, SandboxSpec, SpawnSpec,
    WorkspaceSource,
};
use agentbox_jail::{resolve, HostContext, SandboxRequest};
use agentbox_store::NewAgent;
use agentbox_supervisor::paths;
use serde::{Deserialize, Serialize};

use crate::bail;
use crate::config::Config;
use crate::error::{Context, Error, Kind, Result};
use crate::home::{private_dir, Home};
use crate::profiles::{self, Found};
use crate::secrets::Secrets;
use crate::tree;
use crate::views::AgentView;
use crate::workspace::origin::{Layering, Origin};

fn default_shell() -> Vec<std::ffi::OsString> {
    if Path::new("/bin/bash").exists() {
        vec!["/bin/bash".into()]
    } else {
        vec!["/bin/sh".into()]
    }
}

/// An error about one field of the request (each front end names the field its own way).
pub fn field_error(field: Field, message: impl Into<String>) -> Error {
    Error::invalid(message).for_field(field)
}

/// Checks what the spec names on the host, before anything is made: a profile that exists, a
/// directory that exists, a repository URL that can be cloned. Errors name their [`Field`].
pub fn check(home: &Home, spec: &SpawnSpec) -> Result<()> {
    validate_name(&spec.name).map_err(|e| Error::from(e).with_kind(Kind::Invalid))?;
    sizes(spec)?;
    if let Some(p) = &spec.profile {
        profiles::load(home, p).map_err(|e| field_error(Field::Profile, e.to_string()))?;
    }
    match &spec.workspace {
        WorkspaceSource::CopyOf { dir } => host_dir(Field::FromDir, dir)?,
        WorkspaceSource::HostDir { dir } => host_dir(Field::Workspace, dir)?,
        WorkspaceSource::Git { url, .. } => {
            crate::git::check_url(url).map_err(|e| field_error(Field::FromGit, e.root_message()))?;
        }
        WorkspaceSource::Empty => {}
    }
    if spec.command.iter().any(|a| a.as_encoded_bytes().contains(&0)) {
        bail!(field_error(Field::Command, "the command may not contain NUL bytes"));
    }
    crate::ports::check_publish(&spec.publish).map_err(|e| e.for_field(Field::Publish))?;
    if spec.prompt.as_ref().is_some_and(|p| p.contains(&0)) {
        bail!(field_error(Field::Prompt, "the prompt may not contain NUL bytes"));
    }
    for v in &spec.volumes {
        if crate::volumes::is_volume_source(&v.source) {
            crate::volumes::check(v).map_err(|e| field_error(Field::Volumes, e.root_message()))?;
            continue;
        }
        if !v.source.is_absolute() {
            bail!(field_error(
                Field::Volumes,
                format!("{} is not an absolute path on the host", v.source.display())
            ));
        }
        if std::fs::symlink_metadata(&v.source).is_err() {
            bail!(field_error(Field::Volumes, format!("{} does not exist on the host", v.source.display())));
        }
    }
    if let Some(w) = &spec.workdir {
        if w.as_os_str().is_empty() || w.as_os_str().as_encoded_bytes().contains(&0) {
            bail!(field_error(Field::Workdir, "the working directory must be a non-empty path"));
        }
    }
    Ok(())
}

/// How much one request may hold: enough for any agent, and bounded so that one request cannot
/// make every listing huge or the server's memory grow (`tags: {100000 entries}`).
pub mod limits {
    pub const TAGS: usize = 64;
    pub const TAG_KEY: usize = 128;
    pub const TAG_VALUE: usize = 1024;
    pub const COMMAND_ARGS: usize = 4096;
    pub const COMMAND_BYTES: usize = 256 << 10;
    pub const PROMPT_BYTES: usize = 1 << 20;
    pub const ENV: usize = 1024;
    pub const ENV_BYTES: usize = 64 << 10;
    pub const VOLUMES: usize = 64;
    pub const HOSTS: usize = 256;
    pub const SECRETS: usize = 64;
    pub const PATH_BYTES: usize = 4096;
}

fn at_most(field: Field, what: &str, n: usize, max: usize) -> Result<()> {
    match n > max {
        true => Err(field_error(field, format!("{n} {what}: at most {max}"))),
        false => Ok(()),
    }
}

/// Tags within [`limits`] (a spawn's, or `PUT .../tags`).
pub fn check_tags(tags: &[(String, String)]) -> Result<()> {
    at_most(Field::Tags, "tags", tags.len(), limits::TAGS)?;
    for (k, v) in tags {
        at_most(Field::Tags, &format!("bytes in the tag key {:.20?}", k), k.len(), limits::TAG_KEY)?;
        at_most(Field::Tags, &format!("bytes in the value of tag {:.20?}", k), v.len(), limits::TAG_VALUE)?;
    }
    Ok(())
}

fn sizes(spec: &SpawnSpec) -> Result<()> {
    use agentbox_core::EnvArg;
    check_tags(&spec.tags)?;
    at_most(Field::Command, "arguments", spec.command.len(), limits::COMMAND_ARGS)?;
    let bytes: usize = spec.command.iter().map(|a| a.len()).sum();
    at_most(Field::Command, "bytes of command", bytes, limits::COMMAND_BYTES)?;
    at_most(
        Field::Prompt,
        "bytes of prompt",
        spec.prompt.as_ref().map_or(0, Vec::len),
        limits::PROMPT_BYTES,
    )?;
    at_most(Field::Env, "variables", spec.env.len(), limits::ENV)?;
    for e in &spec.env {
        let n = match e {
            EnvArg::Set(k, v) => k.len() + v.len(),
            EnvArg::Inherit(k) => k.len(),
        };
        at_most(Field::Env, "bytes in one variable", n, limits::ENV_BYTES)?;
    }
    at_most(Field::Volumes, "volumes", spec.volumes.len(), limits::VOLUMES)?;
    at_most(Field::Allow, "hosts", spec.egress.allow.len(), limits::HOSTS)?;
    at_most(Field::Secrets, "secrets", spec.egress.secrets.len(), limits::SECRETS)?;
    let paths = spec.volumes.iter().flat_map(|v| [Some(&v.source), v.target.as_ref()]).flatten();
    for p in paths.chain(spec.workdir.as_ref()) {
        at_most(Field::Volumes, "bytes in a path", p.as_os_str().len(), limits::PATH_BYTES)?;
    }
    Ok(())
}

fn host_dir(field: Field, dir: &Path) -> Result<()> {
    if !dir.is_absolute() {
        bail!(field_error(field, format!("'{}' is not an absolute path", dir.display())));
    }
    if !dir.is_dir() {
        bail!(field_error(field, format!("'{}' is not a directory on this host", dir.display())));
    }
    Ok(())
}

/// Creates the agent's directories and spec. Nothing is recorded yet. Returns the spec and the
/// keys to type once the agent runs (the profile's startup keys).
fn prepare(home: &Home, spec: &SpawnSpec) -> Result<(SandboxSpec, Vec<u8>)> {
    let name = spec.name.as_str();
    let dir = home.agent_dir(name);
    private_dir(&dir)?;
    tree::agent_dir(&paths::home(&dir))?;
    let profile = match &spec.profile {
        Some(p) => {
            let profile = profiles::load(home, p)?;
            let secrets = Secrets::load(home)?;
            let host_home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            let opted_in = Config::load(home)?.profiles.get(p).map(|s| s.seed.clone()).unwrap_or_default();
            let applied = profiles::apply(&profile, &host_home, &secrets, &paths::home(&dir), &opted_in)?;
            for w in &applied.warnings {
                eprintln!("agentbox: warning: {w}");
            }
            Some((profile, applied))
        }
        None => None,
    };
    let backend = spec.backend.or(profile.as_ref().and_then(|p| p.0.backend)).unwrap_or_default();
    let mut overlay = None;
    let workspace = match &spec.workspace {
        WorkspaceSource::HostDir { dir } => dir.clone(),
        source => {
            let ws = paths::workspace(&dir);
            match source {
                WorkspaceSource::CopyOf { dir: src } => {
                    let src = std::fs::canonicalize(src)
                        .map_err(|e| field_error(Field::FromDir, format!("{}: {e}", src.display())))?;
                    // Taken before the workspace is made: what changes in SRC from now on is
                    // someone else's work, which apply does not overwrite.
                    let layering = match crate::workspace::overlay::refusal(&src, backend) {
                        None => Layering::Overlay,
                        Some(why) => {
                            eprintln!("agentbox: note: the workspace is a copy of {}: {why}", src.display());
                            Layering::Copy
                        }
                    };
                    let origin = Origin::new(src.clone(), layering);
                    match layering {
                        Layering::Overlay => {
                            tree::agent_dir(&ws)?;
                            overlay = Some(crate::workspace::overlay::make(&dir, &src)?);
                        }
                        Layering::Copy => tree::copy_for_agent(&src, &ws)?,
                    }
                    origin.save(&dir)?;
                }
                WorkspaceSource::Git { url, git_ref } => {
                    tree::agent_dir(&ws)?;
                    // A repository that cannot be cloned is the request's problem, not the server's.
                    crate::git::clone(url, git_ref.as_deref(), &ws)
                        .map_err(|e| field_error(Field::FromGit, e.to_string()))?;
                    // What `apply --patch` and `--branch` compare with.
                    crate::workspace::gitapply::GitOrigin::record(&dir, &ws, url)?;
                }
                _ => tree::agent_dir(&ws)?,
            }
            ws
        }
    };
    // A CMD replaces the profile's command; the profile's sandbox settings still apply. The
    // request's env and network win over the profile's.
    let (command, mut mounts, mut env, hidden, found, keys, profile) = match profile {
        Some((p, a)) => {
            let keys = p.startup_keys.clone().into_bytes();
            (a.command, a.mounts, a.env, a.hidden, a.credentials, keys, Some(p))
        }
        None => (default_shell(), vec![], vec![], vec![], vec![], vec![], None),
    };
    // The profile's program: from agentbox's install (bound read-only, on PATH), else from the
    // system; one the agent could not run is said now, with the command that fixes it.
    if let Some(p) = &profile {
        match (&p.install, crate::installs::installed(home, &p.name)) {
            (Some(install), Some(_)) => {
                mounts.push(agentbox_core::MountArg {
                    source: crate::installs::tool_dir(home, &p.name),
                    target: Some(PathBuf::from(crate::installs::MOUNT).join(&p.name)),
                    writable: false,
                });
                env.insert(0, EnvArg::Set("PATH".into(), crate::installs::sandbox_path(install, &p.name)));
            }
            _ if spec.command.is_empty() => {
                if let Some(program) = command.first() {
                    check_program(&p.name, &program.to_string_lossy())?;
                }
            }
            _ => {}
        }
    }
    // Agent profiles default to the proxy: their provider is reachable, their keys stay here.
    let network = spec.network_mode(profile.as_ref().map(|p| p.network.unwrap_or(NetworkMode::Proxy)));
    let secrets = Secrets::load(home)?;
    crate::egress::check_flag_secrets(&spec.egress, &secrets).map_err(|e| e.for_field(Field::Secrets))?;
    let (egress, ca) = match network {
        NetworkMode::Proxy => {
            let mut built =
                crate::egress::build_spec(&Config::load(home)?, profile.as_ref(), &found, &spec.egress)?;
            // A subscription login stored for the profile: the agent gets it with placeholders.
            if let Some(p) = &profile {
                built.logins.extend(crate::logins::binding(home, p)?);
            }
            let intercepts = !(built.secrets.is_empty() && built.logins.is_empty());
            let ca = if intercepts { Some(crate::egress::ca_files(home)?) } else { None };
            (built, ca)
        }
        NetworkMode::Full => {
            agentbox_core::note(format_args!(
                "warning: --network full: {name} reaches every host your machine reaches (your LAN, \
                 cloud metadata) unaudited, and gets its keys' real values"
            ));
            // No proxy to swap placeholders: the agent gets the values themselves.
            let names = found.iter().chain(spec.egress.secrets.iter().map(|(n, _)| n));
            for name in names {
                if let Some(Found::Environment(v) | Found::Stored(v)) =
                    profiles::find_credential(name, &secrets)
                {
                    env.push(EnvArg::Set(name.clone(), v));
                }
            }
            (EgressSpec::default(), None)
        }
        NetworkMode::None => {
            if !found.is_empty() {
                eprintln!("agentbox: warning: --network none: {} not passed to the agent", found.join(", "));
            }
            (EgressSpec::default(), None)
        }
    };
    if let Some(p) = &profile {
        write_files(home, p, &paths::home(&dir), &workspace, &egress, &found)?;
    }
    if spec.identity {
        let did = crate::identity::create(&dir, &paths::home(&dir), name)?;
        eprintln!("agentbox: {name} is {did}");
        env.extend(crate::identity::git_env(name));
    }
    // A detached agent's terminal is the supervisor's, not the spawning shell's: it speaks
    // xterm with 256 colours and true colour (what attach, the dashboard and tmux all render).
    // The person's --env wins.
    for (k, v) in [("TERM", "xterm-256color"), ("COLORTERM", "truecolor")] {
        if !env.iter().any(|e| matches!(e, EnvArg::Set(ek, _) | EnvArg::Inherit(ek) if ek == k)) {
            env.insert(0, EnvArg::Set(k.into(), v.into()));
        }
    }
    env.extend(spec.env.iter().cloned());
    mounts.retain(|m| m.target.as_deref() != Some(workspace.as_path()));
    for v in &spec.volumes {
        mounts.push(crate::volumes::resolve(home, v)?);
    }
    let request = SandboxRequest {
        command: if spec.command.is_empty() { command } else { spec.command.clone() },
        workspace: Some(workspace),
        mounts,
        network,
        egress,
        ca,
        env,
        limits: spec.limits,
        hostname: Some(name.to_string()),
        home: Some(HomeSpec::Bind(paths::home(&dir))),
        hidden,
        workdir: spec.workdir.clone(),
        backend,
        ..Default::default()
    };
    if backend == Backend::Vm {
        // Not set up here: the request is fine, this machine cannot serve it yet.
        crate::vm::check_ready().map_err(|e| e.with_kind(Kind::Refused).for_field(Field::Backend))?;
    }
    // What agentbox wrote into the agent's home (instructions, identity) is the agent's.
    tree::give_to_agent(&paths::home(&dir))?;
    if !spec.publish.is_empty() && (backend == Backend::Vm || network == NetworkMode::Full) {
        bail!(field_error(
            Field::Publish,
            "ports are published from an ns agent's own network (not a VM's, not --network full, where \
             the agent's ports are the host's)"
        ));
    }
    let mut sandbox = resolve(request, &HostContext::current()?)?;
    sandbox.overlay = overlay;
    sandbox.publish = spec.publish.clone();
    check_workdir(&sandbox)?;
    Ok((sandbox, keys))
}

/// Writes the profile's files into the agent's home (see [`agentbox_core::SeedFile`]). A file
/// that needs a credential the agent does not get is left out, as is one whose placeholder is
/// unknown (outside `proxy` mode the agent has the value itself, not a placeholder).
fn write_files(
    agentbox_home: &Home,
    profile: &agentbox_core::Profile,
    home: &Path,
    workspace: &Path,
    egress: &EgressSpec,
    found: &[String],
) -> Result<()> {
    let placeholder =
        |name: &str| egress.secrets.iter().find(|b| b.env == name).map(|b| b.placeholder.clone());
    // `needs = "login"`: written when the agent uses the profile's subscription login.
    let gets = |n: &String| found.contains(n) || (n == "login" && !egress.logins.is_empty());
    let mut files: Vec<(String, String)> = Vec::new();
    'files: for f in &profile.files {
        if f.needs.as_ref().is_some_and(|n| !gets(n)) {
            continue;
        }
        let mut content = f.content.replace("${workspace}", &workspace.to_string_lossy());
        while let Some(start) = content.find("${placeholder:") {
            let Some(len) = content[start..].find('}') else { continue 'files };
            let name = content[start + "${placeholder:".len()..start + len].to_string();
            let Some(value) = placeholder(&name) else { continue 'files };
            content.replace_range(start..=start + len, &value);
        }
        files.push((f.path.clone(), content));
    }
    // The login's credentials file last: a person who imported a login wants it used.
    if let (Some(spec), Some(binding)) = (&profile.login, egress.logins.first()) {
        files.push((spec.file.clone(), crate::logins::agent_document(agentbox_home, binding)?));
    }
    for (path, content) in files {
        write_home_file(home, &path, &content)?;
    }
    Ok(())
}

/// Writes `~/REL` under the agent's home `home`, through real directories only.
fn write_home_file(home: &Path, path: &str, content: &str) -> Result<()> {
    {
        let Some(rel) = path.strip_prefix("~/") else { return Ok(()) };
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Ok(());
        }
        let path = home.join(rel);
        // The home was seeded from the person's config, links included: the file is written
        // only through real directories, and never through a link.
        let through_link = path
            .ancestors()
            .take_while(|a| *a != home)
            .any(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()));
        if through_link {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(content.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Refuses a profile whose program an agent could not run: not in the sandbox's PATH (the
/// system's directories) and not installed by agentbox. Names where it is on the host if it is
/// somewhere the sandbox does not show (`~/.local/bin`, nvm), and the command that fixes it.
fn check_program(profile: &str, program: &str) -> Result<()> {
    let runnable = |dir: &Path| dir.join(program).is_file();
    if program.contains('/') || agentbox_core::SANDBOX_PATH.split(':').any(|d| runnable(Path::new(d))) {
        return Ok(());
    }
    let elsewhere = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|p| p.is_file()))
        .unwrap_or_default();
    let msg = match elsewhere {
        Some(p) => format!(
            "{program} is at {}, which agents do not see: run `agentbox agents install {profile}` \
             (or bind its directory read-only with -v and set PATH with -e)",
            p.display()
        ),
        None => format!("{program} is not installed: run `agentbox agents install {profile}`"),
    };
    Err(field_error(Field::Profile, msg))
}

/// Refuses a working directory the sandbox would not have: the path inside, seen through the
/// workspace, the home and the volumes (the rest of the sandbox's tree is the host's), must be a
/// directory. Said now, as the request's mistake, rather than by a sandbox that cannot start.
fn check_workdir(spec: &SandboxSpec) -> Result<()> {
    let w = &spec.workdir;
    // An overlay workspace shows its lower directory's tree (what the agent adds comes later).
    let ws_host = spec.overlay.as_ref().map_or(&spec.workspace, |o| &o.lower);
    let mut views: Vec<(PathBuf, PathBuf)> = vec![(spec.workspace.clone(), ws_host.clone())];
    if let HomeSpec::Bind(h) = &spec.home {
        views.push((PathBuf::from(agentbox_core::SANDBOX_HOME), h.clone()));
    }
    views.extend(spec.mounts.iter().map(|m| (m.target.clone(), m.source.clone())));
    let host = views
        .iter()
        .filter(|(target, _)| w.starts_with(target))
        .max_by_key(|(target, _)| target.as_os_str().len())
        .and_then(|(target, source)| Some(source.join(w.strip_prefix(target).ok()?)))
        .unwrap_or_else(|| w.clone());
    if !host.is_dir() {
        bail!(field_error(Field::Workdir, format!("{} is not a directory in the sandbox", w.display())));
    }
    Ok(())
}

/// Claims `name` for this process. A claim whose spawn died (killed mid-spawn) is released and
/// the name claimed again.
pub fn claim(store: &agentbox_store::Store, name: &str, dir: &Path, owner: &str) -> Result<()> {
    let state_dir = dir.to_string_lossy();
    match store.claim(name, &state_dir, owner) {
        Err(agentbox_store::StoreError::Exists(_)) => {
            let rec = store.get(name)?;
            match (crate::agents::is_dead_claim(&rec), rec.owner.as_deref()) {
                (true, Some(dead)) => {
                    store.release_claim(name, dead)?;
                    store.record(name, "reclaimed", "the spawn that claimed the name died")?;
                    Ok(store.claim(name, &state_dir, owner)?)
                }
                _ if rec.state == agentbox_core::AgentState::Creating => {
                    Err(Error::conflict(format!("agent '{name}' is being created by another spawn")))
                }
                _ => Err(agentbox_store::StoreError::Exists(name.to_string()).into()),
            }
        }
        other => Ok(other?),
    }
}

/// Creates a claimed agent's directory. One already there belongs to no agent (the name was
/// free): a crash's leftover, removed first.
pub(crate) fn make_dir(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        tree::remove_tree(dir)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::from(e).context(format!("creating {}", dir.display()))),
    }
}

/// Starts one agent; returns once its command runs inside the sandbox. Call it from a
/// single-threaded process (the CLI, `__spawn`); others use [`spawn_in_child`].
pub fn spawn_one(home: &Home, spec: &SpawnSpec) -> Result<()> {
    check(home, spec)?;
    let name = spec.name.as_str();
    let store = home.store()?;
    let dir = home.agent_dir(name);
    // The name is claimed before anything is made on disk: of two spawns of one name, exactly
    // one goes on, and the other touches nothing of it.
    let owner = crate::agents::me();
    claim(&store, name, &dir, &owner)?;
    let undo = |e: Error| {
        let _ = tree::remove_tree(&dir);
        let _ = store.release_claim(name, &owner);
        e
    };
    make_dir(&dir).map_err(undo)?;
    // Stored as typed (with Enter), so `restart` replays exactly the same keys.
    let prompt = spec.prompt.clone().map(|mut text| {
        if !text.ends_with(b"\r") && !text.ends_with(b"\n") {
            text.push(b'\r');
        }
        text
    });
    let (sandbox, startup_keys) = prepare(home, spec).map_err(undo)?;
    // An overlay's changes are its upper layer: no manifest to take (spawn stays O(1) in the
    // tree's size). Git and hooks see the overlay's lower directory, as the agent will.
    let seen = sandbox.overlay.as_ref().map_or(&sandbox.workspace, |o| &o.lower).clone();
    if sandbox.overlay.is_none() {
        crate::diff::record_snapshot(&dir, &sandbox.workspace).map_err(undo)?;
    }
    if spec.identity {
        crate::diff::record_commit_base(&dir, &seen).map_err(undo)?;
    }
    crate::hooks::run(home, "pre-spawn", name, &seen).map_err(undo)?;
    let spec_json = sandbox.encode().map_err(|e| undo(e.into()))?;
    let state_dir = dir.to_string_lossy();
    let restart = spec.restart.map(|r| r.to_string());
    let new = NewAgent {
        restart: restart.as_deref(),
        name,
        spec_json: &spec_json,
        state_dir: &state_dir,
        tags: &spec.tags,
        profile: spec.profile.as_deref(),
        prompt: prompt.as_deref(),
        state: None,
    };
    store.fill_claim(&new, &owner).map_err(|e| undo(e.into()))?;
    // The record's copy in the agent's directory is written by the supervisor, while the
    // sandbox sets itself up.
    // Closed while the supervisor starts: with no store connection open, it can be forked. The
    // supervisor opens the store right after: the log is left for it rather than checkpointed.
    let _ = store.leave_log_on_close();
    drop(store);

    let publish = sandbox.publish.clone();
    let fresh = crate::supervise::Fresh { spec: sandbox, state_dir: dir.clone(), restart: spec.restart };
    if let Err(e) = crate::start::start_supervisor(home, name, &dir, &publish, Some(fresh)) {
        let _ = tree::remove_tree(&dir);
        if let Ok(store) = home.store() {
            let _ = store.delete(name);
            let _ = store.record(name, "spawn-failed", &e.to_string());
        }
        return Err(e);
    }
    crate::start::type_after_start(&dir, &startup_keys, prompt.as_deref())?;
    if let Err(e) = crate::hooks::run(home, "post-spawn", name, &seen) {
        eprintln!("agentbox: warning: {e}");
    }
    Ok(())
}

/// What `__spawn` answers: the agent, or the error with its kind.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Agent(Box<AgentView>),
    Error { kind: String, message: String, field: Option<Field> },
}

impl Answer {
    fn error(e: &Error) -> Self {
        // The field travels apart from the message, for the caller to name in its own words.
        Answer::Error { kind: e.kind().as_str().into(), message: e.to_string(), field: e.field() }
    }
}

/// The `__spawn` role: one [`SpawnSpec`] (JSON) on stdin, one answer on stdout.
pub fn spawn_role() -> Result<i32> {
    let home = Home::open()?;
    let spec: Result<SpawnSpec> =
        serde_json::from_reader(std::io::stdin().lock()).context("reading the spawn request");
    let answer = match spec.and_then(|s| spawn_one(&home, &s).map(|()| s)) {
        Ok(s) => match crate::agents::get(&home.store()?, &s.name) {
            Ok(rec) => Answer::Agent(Box::new(AgentView::of(&rec))),
            Err(e) => Answer::error(&e),
        },
        Err(e) => Answer::error(&e),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &answer)?;
    out.write_all(b"\n")?;
    Ok(0)
}

/// Spawns an agent from any process, threads and all: checked here (bad input never costs a
/// process), built by a fresh `agentbox __spawn` process, which is single-threaded and takes the
/// same path as `agentbox spawn`. `/proc/self/exe` keeps it working when the binary is replaced by
/// an upgrade while the server runs.
pub fn spawn_in_child(home: &Home, spec: &SpawnSpec) -> Result<AgentView> {
    check(home, spec)?;
    let mut child = crate::home::self_command()
        .arg("__spawn")
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting agentbox to spawn the agent")?;
    if let Some(mut stdin) = child.stdin.take() {
        serde_json::to_writer(&mut stdin, spec)?;
    }
    let out = child.wait_with_output().context("waiting for the spawn")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Answer>(text.trim()) {
        Ok(Answer::Agent(v)) => Ok(*v),
        Ok(Answer::Error { kind, message, field }) => {
            let e = Error::new(Kind::parse(&kind).unwrap_or(Kind::Internal), message);
            Err(match field {
                Some(f) => e.for_field(f),
                None => e,
            })
        }
        Err(_) => bail!(
            "the spawn process ended without an answer ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
