//! `cp`: files between an agent's sandbox and the host, like `docker cp`, running or stopped.
//!
//! The sandbox side runs `tar` inside the agent's own sandbox (joined, as `exec` does, when it
//! runs; a fresh sandbox from its stored spec, without network, when it is stopped), so a path
//! in the sandbox means what it means to the agent and agentbox never resolves an agent-made
//! path on the host. The host side treats the stream the sandbox sends as hostile
//! ([`extract`]) and reads the person's files without following links ([`pack`]).

mod extract;
mod pack;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use agentbox_core::{AgentState, Backend, NetworkMode, SandboxSpec};
use agentbox_jail::{build_plan, start, wait_captured, Outcome, Pipes, RealFs, Running, Stdio};
use serde::Serialize;

use crate::agents::{self, is_live_state};
use crate::error::{Context, Error, Result};
use crate::exec::{self, ExecRequest};
use crate::home::Home;

/// A path from the sandbox as it may be printed: control characters escaped.
pub(crate) fn shown(p: &Path) -> String {
    agentbox_core::termfilter::escape_for_terminal(&p.to_string_lossy())
}

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries left out, each with why.
    pub skipped: Vec<String>,
}

/// Where the host end of a copy is.
pub enum HostEnd<'a> {
    Path(PathBuf),
    /// A tar stream (`-`): written as the sandbox sends it, or read and sent as it is.
    Stream(&'a mut dyn Write),
}

/// A command running in an agent's sandbox, its stdio as pipes.
struct InSandbox {
    running: Running,
    stdin: Option<File>,
    stdout: File,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

/// The agent's sandbox path `path` made absolute (a relative one is from its working directory).
fn sandbox_path(spec: &SandboxSpec, path: &Path) -> Result<PathBuf> {
    let abs = agentbox_core::normalize_absolute(&spec.workdir.join(path))?;
    if abs.file_name().is_none() {
        return Err(Error::invalid(format!("{}: name a file or directory, not /", path.display())));
    }
    Ok(abs)
}

/// Starts `argv` in agent `name`'s sandbox.
fn run_in(home: &Home, name: &str, argv: Vec<OsString>) -> Result<(InSandbox, SandboxSpec)> {
    let store = home.store()?;
    let rec = agents::get(&store, name)?;
    let mut spec = SandboxSpec::decode(&rec.spec)?;
    let mut running = match rec.state {
        AgentState::Paused => {
            return Err(Error::conflict(format!("agent '{name}' is paused; `agentbox resume {name}` first")))
        }
        AgentState::Creating => return Err(Error::conflict(format!("agent '{name}' is being created"))),
        s if is_live_state(&s) => {
            let req = ExecRequest { command: argv, tty: false, env: Vec::new(), workdir: None };
            exec::start(home, name, req, Stdio::Pipes)??
        }
        // Stopped: its files, in a sandbox of their own that reaches no network.
        _ => {
            let mut fresh = spec.clone();
            fresh.command = argv;
            fresh.network = NetworkMode::None;
            fresh.egress = Default::default();
            fresh.backend = Backend::Ns;
            fresh.timeout = None;
            start(&build_plan(&fresh, &RealFs), Stdio::Pipes, false)?
        }
    };
    spec.command.clear();
    let Pipes { stdin, stdout, stderr } =
        running.pipes.take().ok_or_else(|| Error::internal("the sandbox has no pipes"))?;
    let stderr = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = File::from(stderr).take(64 << 10).read_to_end(&mut out);
        out
    });
    Ok((InSandbox { running, stdin: Some(File::from(stdin)), stdout: File::from(stdout), stderr }, spec))
}

impl InSandbox {
    /// Waits for the command; `ok` are the exit codes that count as done.
    fn finish(mut self, what: &str, ok: &[i32]) -> Result<()> {
        drop(self.stdin.take());
        drop(self.stdout);
        let outcome = wait_captured(self.running, None, 0)?.outcome;
        let said = self.stderr.join().unwrap_or_default();
        // The sandbox's words, printable: each line's control characters escaped.
        let said = String::from_utf8_lossy(&said)
            .trim()
            .lines()
            .map(agentbox_core::termfilter::escape_for_terminal)
            .collect::<Vec<_>>()
            .join("\n");
        match outcome {
            Outcome::Exited(c) if ok.contains(&c) => Ok(()),
            Outcome::Exited(c) => {
                Err(Error::invalid(format!("{what} (tar in the sandbox said, status {c}): {said}")))
            }
            Outcome::Signaled(s) => {
                Err(Error::internal(format!("{what}: tar in the sandbox was killed ({s})")))
            }
            Outcome::TimedOut => Err(Error::internal(format!("{what}: timed out"))),
        }
    }
}

/// Copies `src` (a path in the agent's sandbox) out to `to`: docker's rules (into an existing
/// directory, else to that name), with the sandbox's stream checked entry by entry.
pub fn copy_out(home: &Home, name: &str, src: &Path, to: HostEnd<'_>) -> Result<Report> {
    let store = home.store()?;
    let spec = SandboxSpec::decode(&agents::get(&store, name)?.spec)?;
    drop(store);
    let src = sandbox_path(&spec, src)?;
    let (parent, base) = (src.parent().unwrap_or(Path::new("/")), src.file_name().unwrap_or_default());
    let argv: Vec<OsString> = vec![
        "/bin/tar".into(),
        "-C".into(),
        parent.into(),
        "-cf".into(),
        "-".into(),
        "--".into(),
        base.into(),
    ];
    let what = format!("copying {name}:{}", src.display());
    match to {
        HostEnd::Stream(out) => {
            let (mut run, _) = run_in(home, name, argv)?;
            let copied = std::io::copy(&mut run.stdout, out);
            run.finish(&what, &[0, 1])?;
            Ok(Report { bytes: copied?, ..Default::default() })
        }
        HostEnd::Path(dst) => {
            let target = host_target(&dst, base)?;
            let (mut run, _) = run_in(home, name, argv)?;
            let extracted = extract::extract(&mut run.stdout, &target);
            // A host side that stopped reading ends the sandbox's tar with a broken pipe: its
            // own reason comes first, unless the sandbox sent nothing (no such path).
            match (extracted, run.finish(&what, &[0, 1])) {
                (Ok(report), Ok(())) => Ok(report),
                (Err(empty), Err(why)) if empty.kind() == crate::error::Kind::NotFound => Err(why),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        }
    }
}

/// Where a copy out to host path `dst` lands: into it when it is a directory, else in its
/// parent under its name. A link there is refused: nothing is written through one.
fn host_target(dst: &Path, base: &OsStr) -> Result<extract::Target> {
    match std::fs::symlink_metadata(dst) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::conflict(format!(
            "{} is a link; agentbox does not write through links (name the directory itself)",
            dst.display()
        ))),
        Ok(m) if m.is_dir() => {
            Ok(extract::Target { dir: dst.to_path_buf(), name: Some(base.to_os_string()) })
        }
        Ok(_) | Err(_) => {
            let parent = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let file = dst
                .file_name()
                .ok_or_else(|| Error::invalid(format!("{}: not a name to copy to", dst.display())))?;
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => {
                    Ok(extract::Target { dir: parent.to_path_buf(), name: Some(file.to_os_string()) })
                }
                _ => Err(Error::invalid(format!("{}: no such directory to copy into", parent.display()))),
            }
        }
    }
}

/// The script that unpacks a copy in the sandbox: into DST when it is a directory, else as DST
/// (through a temporary directory beside it, then a rename).
const UNPACK: &str = r#"d=$1 b=$2
if [ -d "$d" ]; then exec /bin/tar -C "$d" -xf - --no-same-owner; fi
p=$(dirname -- "$d")
[ -d "$p" ] || { echo "$p: no such directory" >&2; exit 2; }
t=$(mktemp -d "$p/.agentbox-cp.XXXXXX") || exit 2
/bin/tar -C "$t" -xf - --no-same-owner && mv -f -T -- "$t/$b" "$d"; s=$?
rm -rf -- "$t"; exit $s"#;

/// Copies `from` into the agent's sandbox at `dst` (docker's rules). A stream (`-`) is a tar
/// unpacked into the directory `dst`.
pub fn copy_in(home: &Home, name: &str, from: HostSource<'_>, dst: &Path) -> Result<Report> {
    let store = home.store()?;
    let spec = SandboxSpec::decode(&agents::get(&store, name)?.spec)?;
    drop(store);
    let dst = sandbox_path(&spec, dst)?;
    let what = format!("copying to {name}:{}", dst.display());
    match from {
        HostSource::Stream(input) => {
            let argv: Vec<OsString> = vec![
                "/bin/tar".into(),
                "-C".into(),
                dst.into(),
                "-xf".into(),
                "-".into(),
                "--no-same-owner".into(),
            ];
            let (mut run, _) = run_in(home, name, argv)?;
            let mut stdin = run.stdin.take().ok_or_else(|| Error::internal("no stdin"))?;
            let sent = std::io::copy(input, &mut stdin);
            drop(stdin);
            run.finish(&what, &[0])?;
            Ok(Report { bytes: sent?, ..Default::default() })
        }
        HostSource::Path(src) => {
            let top = src
                .file_name()
                .map(OsStr::to_os_string)
                .or_else(|| std::fs::canonicalize(&src).ok()?.file_name().map(OsStr::to_os_string))
                .ok_or_else(|| Error::invalid(format!("{}: name a file or directory", src.display())))?;
            let argv: Vec<OsString> =
                vec!["/bin/sh".into(), "-c".into(), UNPACK.into(), "sh".into(), dst.into(), top.clone()];
            let (mut run, _) = run_in(home, name, argv)?;
            let mut stdin = run.stdin.take().ok_or_else(|| Error::internal("no stdin"))?;
            let packed = pack::pack(&src, &top, &mut stdin).context("reading the host side");
            drop(stdin);
            let ended = run.finish(&what, &[0]);
            let report = packed?;
            ended?;
            Ok(report)
        }
    }
}

/// Where the host side of a copy in comes from.
pub enum HostSource<'a> {
    Path(PathBuf),
    Stream(&'a mut dyn Read),
}

impl std::fmt::Debug for HostSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "Path({})", p.display()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl std::fmt::Debug for HostEnd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "Path({})", p.display()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}
