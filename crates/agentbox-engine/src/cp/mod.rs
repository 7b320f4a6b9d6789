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
use crate::error::{Error, Result};
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

/// A command running in an agent's sandbox, its stdio as pipes.
struct InSandbox {
    running: Running,
    stdin: Option<File>,
    stdout: File,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

/// A copy's request checked before anything runs: an agent's name, a path without NUL bytes,
/// and a top entry that is one plain name.
fn check_request(name: &str, path: &Path, top: Option<&OsStr>) -> Result<()> {
    agentbox_core::validate_name(name).map_err(|e| Error::invalid(e.to_string()))?;
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::invalid("path: NUL bytes are not allowed"));
    }
    if let Some(top) = top {
        let mut parts = Path::new(top).components();
        let one = matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None));
        if !one || top.as_encoded_bytes().iter().any(|b| *b == b'/' || *b == 0) {
            return Err(Error::invalid(format!("top: '{}' is not one plain name", shown(Path::new(top)))));
        }
    }
    Ok(())
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

/// The tar stream of `src` (a path in the agent's sandbox, relative: from its working
/// directory) written to `out`, as the sandbox's tar makes it; its one top entry is named as
/// `src` is. `cp` out, `cp NAME:PATH -` and the API's `GET .../archive`.
pub fn archive_out(home: &Home, name: &str, src: &Path, out: &mut dyn Write) -> Result<u64> {
    archive_out_stoppable(home, name, src, out, &Stopper::default())
}

/// Lets another thread end a copy that runs in a helper process: a server whose client went
/// away while the agent holds its `tar` stopped would otherwise keep a thread waiting on it.
#[derive(Debug, Clone, Default)]
pub struct Stopper(std::sync::Arc<std::sync::Mutex<Option<agentbox_sys::PidFd>>>);

impl Stopper {
    /// Kills the helper, if one is still running (through its pidfd: never another process).
    pub fn stop(&self) {
        if let Some(fd) = self.0.lock().ok().as_ref().and_then(|g| g.as_ref()) {
            let _ = fd.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn set(&self, fd: Option<agentbox_sys::PidFd>) {
        if let Ok(mut g) = self.0.lock() {
            *g = fd;
        }
    }
}

/// [`archive_out`], with a [`Stopper`] that ends it from another thread.
pub fn archive_out_stoppable(
    home: &Home,
    name: &str,
    src: &Path,
    out: &mut dyn Write,
    stopper: &Stopper,
) -> Result<u64> {
    check_request(name, src, None)?;
    if agentbox_sys::SingleThreaded::check().is_err() {
        return in_child(
            home,
            &["out".as_ref(), name.as_ref(), src.as_os_str()],
            None,
            Some(out),
            Some(stopper),
        );
    }
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
    let what = format!("copying {name}:{}", shown(&src));
    let (mut run, _) = run_in(home, name, argv)?;
    let copied = std::io::copy(&mut run.stdout, out);
    // tar's 1: a file changed while it was read (an agent at work); the copy is whole.
    run.finish(&what, &[0, 1])?;
    Ok(copied?)
}

/// Where a copy out to host path `dst` lands: into it when it is a directory (named `base`, the
/// source's own name as the person typed it), else in its parent under its name. A link there
/// is refused: nothing is written through one.
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
const UNPACK: &str = r#"d=$1 b=$2 p=$3
if [ -d "$d" ]; then exec /bin/tar -C "$d" -xf - --no-same-owner; fi
[ -d "$p" ] || { echo "$p: no such directory" >&2; exit 2; }
t=$(mktemp -d "$p/.agentbox-cp.XXXXXX") || exit 2
/bin/tar -C "$t" -xf - --no-same-owner && mv -f -T -- "$t/$b" "$d"; s=$?
rm -rf -- "$t"; exit $s"#;

/// Unpacks the tar stream `input` in the agent's sandbox at `dst`: into that directory, or,
/// with `top` (the stream's one top entry), as `dst` itself when `dst` is not a directory
/// (docker's rules). The API's `PUT .../archive`.
pub fn archive_in(
    home: &Home,
    name: &str,
    dst: &Path,
    top: Option<&OsStr>,
    input: &mut dyn Read,
) -> Result<u64> {
    if agentbox_sys::SingleThreaded::check().is_err() {
        let mut args: Vec<&OsStr> = vec!["in".as_ref(), name.as_ref(), dst.as_os_str()];
        args.extend(top);
        return in_child(home, &args, Some(input), None, None);
    }
    let store = home.store()?;
    let spec = SandboxSpec::decode(&agents::get(&store, name)?.spec)?;
    drop(store);
    let dst = sandbox_path(&spec, dst)?;
    let what = format!("copying to {name}:{}", shown(&dst));
    let argv: Vec<OsString> = match top {
        None => vec![
            "/bin/tar".into(),
            "-C".into(),
            dst.into(),
            "-xf".into(),
            "-".into(),
            "--no-same-owner".into(),
        ],
        Some(top) => {
            // The parent is worked out here: a shell's $(dirname) drops trailing newlines.
            let parent = dst.parent().unwrap_or(Path::new("/")).as_os_str().to_os_string();
            vec![
                "/bin/sh".into(),
                "-c".into(),
                UNPACK.into(),
                "sh".into(),
                dst.into(),
                top.to_os_string(),
                parent,
            ]
        }
    };
    let (mut run, _) = run_in(home, name, argv)?;
    let mut stdin = run.stdin.take().ok_or_else(|| Error::internal("no stdin"))?;
    let sent = std::io::copy(input, &mut stdin);
    drop(stdin);
    run.finish(&what, &[0])?;
    Ok(sent?)
}

/// The name a host path goes by as a copy's top entry.
pub fn top_name(src: &Path) -> Result<OsString> {
    src.file_name()
        .map(OsStr::to_os_string)
        .or_else(|| std::fs::canonicalize(src).ok()?.file_name().map(OsStr::to_os_string))
        .ok_or_else(|| Error::invalid(format!("{}: name a file or directory", src.display())))
}

/// The host side of a copy in: `src` packed as a tar stream whose top entry is `top`.
pub fn pack_on_host(src: &Path, top: &OsStr, out: &mut dyn Write) -> Result<Report> {
    pack::pack(src, top, out)
}

/// The name a copy out of sandbox path `src` goes by on the host: its last component as typed
/// (`out/sub` is `sub`). A path that ends in `.` or `..` names no entry of its own.
pub fn source_name(src: &Path) -> Result<OsString> {
    match src.components().next_back() {
        Some(std::path::Component::Normal(n)) => Ok(n.to_os_string()),
        _ => Err(Error::invalid(format!(
            "{}: name the file or directory to copy (as in NAME:out or NAME:/srv/app)",
            shown(src)
        ))),
    }
}

/// The host side of a copy out: a sandbox's tar stream unpacked at `dst` (into it when it is a
/// directory, as `base`; else as `dst`), checked entry by entry.
pub fn unpack_on_host(archive: &mut dyn Read, dst: &Path, base: &OsStr) -> Result<Report> {
    extract::extract(archive, &host_target(dst, base)?)
}

/// [`archive_out`] or [`archive_in`] from a process with threads (the server, the CLI while its
/// host side runs): done by a fresh single-threaded `agentbox __archive` process, since a sandbox
/// is joined or started by a fork. The stream goes through its stdin or stdout; its stderr says
/// what failed (`{"kind", "message"}`).
fn in_child(
    home: &Home,
    args: &[&OsStr],
    input: Option<&mut dyn Read>,
    output: Option<&mut dyn Write>,
    stopper: Option<&Stopper>,
) -> Result<u64> {
    use std::process::Stdio as P;
    let mut child = crate::home::self_command()
        .arg("__archive")
        .args(args)
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(if input.is_some() { P::piped() } else { P::null() })
        .stdout(if output.is_some() { P::piped() } else { P::null() })
        .stderr(P::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("starting agentbox to copy: {e}")))?;
    // Our own child, not reaped until the wait below: its pid names it until then.
    if let Some(s) = stopper {
        s.set(i32::try_from(child.id()).ok().and_then(|pid| agentbox_sys::PidFd::open(pid).ok()));
    }
    let stderr = child.stderr.take();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.by_ref().take(64 << 10).read_to_string(&mut text);
        }
        text
    });
    let moved = match (input, output) {
        (Some(input), _) => {
            let mut stdin = child.stdin.take().ok_or_else(|| Error::internal("no stdin"))?;
            let n = std::io::copy(input, &mut stdin);
            // A stream that broke off on this side is not a copy that ended: the helper is
            // stopped rather than left to take a clean end of input.
            if n.is_err() {
                let _ = child.kill();
            }
            drop(stdin);
            n
        }
        (_, Some(output)) => {
            let mut stdout = child.stdout.take().ok_or_else(|| Error::internal("no stdout"))?;
            // Whoever stopped reading, the helper ends by itself and says why.
            std::io::copy(&mut stdout, output)
        }
        _ => Ok(0),
    };
    let status = child.wait().map_err(|e| Error::internal(format!("waiting for the copy: {e}")));
    if let Some(s) = stopper {
        s.set(None);
    }
    let status = status?;
    let said = said.join().unwrap_or_default();
    if !status.success() {
        let last = said.trim().lines().last().unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(last).unwrap_or_default();
        let kind = answer["kind"]
            .as_str()
            .and_then(crate::error::Kind::parse)
            .unwrap_or(crate::error::Kind::Internal);
        let message = answer["message"].as_str().map(str::to_string).unwrap_or_else(|| match said.trim() {
            "" => format!("the copy's sandbox side ended ({status})"),
            other => agentbox_core::termfilter::escape_for_terminal(other),
        });
        return Err(Error::new(kind, message));
    }
    Ok(moved?)
}

/// The `__archive` role: `out NAME PATH` writes the stream to stdout, `in NAME PATH [TOP]` reads
/// it from stdin; a failure is one JSON line on stderr.
pub fn archive_role(args: &[OsString]) -> i32 {
    let run = || -> Result<u64> {
        let home = Home::open()?;
        let arg = |i: usize| args.get(i).ok_or_else(|| Error::invalid("__archive: missing arguments"));
        let name = arg(1)?.to_str().ok_or_else(|| Error::invalid("__archive: the name is not UTF-8"))?;
        let path = Path::new(arg(2)?);
        match arg(0)?.to_str() {
            Some("out") => archive_out(&home, name, path, &mut std::io::stdout().lock()),
            Some("in") => {
                let top = args.get(3).map(OsString::as_os_str);
                archive_in(&home, name, path, top, &mut std::io::stdin().lock())
            }
            _ => Err(Error::invalid("__archive: out or in")),
        }
    };
    match run() {
        Ok(_) => 0,
        Err(e) => {
            let answer = serde_json::json!({ "kind": e.kind().as_str(), "message": e.root_message() });
            eprintln!("{answer}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's stream does not choose what lands in the person's directory: its top entry
    /// goes under the name the person typed, whatever the stream calls it.
    #[test]
    fn the_stream_does_not_choose_the_name_it_lands_under() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(5);
        b.append_data(&mut h, ".bashrc", &b"owned"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        unpack_on_host(&mut &bytes[..], dir.path(), OsStr::new("report.txt")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("report.txt")).unwrap(), "owned");
        assert!(!dir.path().join(".bashrc").exists());
    }

    #[test]
    fn requests_and_names_are_checked_before_anything_runs() {
        let p = Path::new("out");
        assert!(check_request("web", p, Some(OsStr::new("f.txt"))).is_ok());
        for top in ["..", ".", "a/b", ""] {
            assert!(check_request("web", p, Some(OsStr::new(top))).is_err(), "{top:?}");
        }
        assert!(check_request("Web", p, None).is_err());
        assert!(check_request("web", Path::new("a\0b"), None).is_err());
        assert_eq!(source_name(Path::new("out/sub/")).unwrap(), "sub");
        for bad in [".", "out/..", "/"] {
            assert!(source_name(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
