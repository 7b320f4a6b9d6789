//! Helpers: locating the binaries, running agentbox as the caller or as nobody, workspaces.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const NOBODY: u32 = 65534;
/// Where the probe binary appears inside the sandbox.
pub const PROBE: &str = "/run/agentbox-probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The user running the tests (root in CI).
    Caller,
    /// uid/gid 65534 with no supplementary groups.
    Nobody,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Every identity the security tests run as.
pub fn modes() -> Vec<As> {
    if is_root() {
        vec![As::Caller, As::Nobody]
    } else {
        vec![As::Caller]
    }
}

pub struct Bins {
    pub agentbox: PathBuf,
    pub probe: PathBuf,
}

fn reachable_by_nobody(p: &Path) -> bool {
    p.ancestors().skip(1).all(|a| a.metadata().map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
        && p.metadata().map(|m| m.permissions().mode() & 0o005 == 0o005).unwrap_or(false)
}

/// The binaries, copied to a world-readable directory if the build directory is not reachable by
/// an unprivileged user. The copy is keyed by size and mtime and published by rename, so parallel
/// test processes share it.
fn share(p: &Path) -> PathBuf {
    if !is_root() || reachable_by_nobody(p) {
        return p.to_path_buf();
    }
    let meta = std::fs::metadata(p).unwrap();
    let mtime = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("agentbox-it-bin-{}-{mtime:x}", meta.len()));
    let dst = dir.join(p.file_name().unwrap());
    if !dst.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tmp = dir.join(format!(".{}.{}", p.file_name().unwrap().to_string_lossy(), std::process::id()));
        std::fs::copy(p, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    }
    dst
}

pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let agentbox = PathBuf::from(env!("CARGO_BIN_EXE_agentbox"));
        let probe = agentbox.with_file_name("agentbox-probe");
        assert!(
            probe.exists(),
            "{} is missing: build the whole workspace (cargo nextest run --workspace)",
            probe.display()
        );
        Bins { agentbox: share(&agentbox), probe: share(&probe) }
    })
}

/// The host uid (and gid) a sandbox started by `who` runs as: the caller's own, or agentbox's
/// unprivileged id when the caller is root.
pub fn agent_host_id(who: As) -> u32 {
    match who {
        As::Nobody => NOBODY,
        As::Caller if is_root() => agentbox_core::ROOT_AGENT_ID,
        As::Caller => nix::unistd::geteuid().as_raw(),
    }
}

/// A scratch workspace under /tmp owned by the host id the sandbox will run as, as a person
/// would prepare a directory for an agent.
pub struct Workspace {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn workspace(who: As) -> Workspace {
    let dir = tempfile::Builder::new().prefix("agentbox-it-").tempdir().unwrap();
    let path = std::fs::canonicalize(dir.path()).unwrap();
    let owner = agent_host_id(who);
    std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    Workspace { _dir: dir, path }
}

/// A command that runs agentbox as `who`.
pub fn command(who: As) -> Command {
    let agentbox = &bins().agentbox;
    let mut cmd = match who {
        As::Caller => Command::new(agentbox),
        As::Nobody => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(agentbox);
            c.env("HOME", "/nonexistent");
            c
        }
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// `agentbox run -w WS [flags] -- argv...` as `who`, with the probe mounted at [`PROBE`].
pub fn run_command(who: As, ws: &Workspace, flags: &[&str], argv: &[&str]) -> Command {
    let mut cmd = command(who);
    cmd.arg("run").arg("-w").arg(&ws.path);
    cmd.arg("--mount").arg(format!("{}:{PROBE}:ro", bins().probe.display()));
    cmd.args(flags).arg("--").args(argv);
    cmd
}

/// Runs [`run_command`] to completion.
pub fn run_in(who: As, ws: &Workspace, flags: &[&str], argv: &[&str]) -> Output {
    run_command(who, ws, flags, argv).output().unwrap()
}

/// Runs one probe attack in a fresh sandbox.
pub fn attack(who: As, flags: &[&str], attack_args: &[&str]) -> Output {
    let ws = workspace(who);
    let mut argv = vec![PROBE];
    argv.extend_from_slice(attack_args);
    run_in(who, &ws, flags, &argv)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts that a probe reported the attack as blocked (and not a setup failure of agentbox).
#[track_caller]
pub fn assert_blocked(who: As, out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.code() == Some(0) && stdout.starts_with("BLOCKED"),
        "as {who:?}: attack not blocked: status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
}

pub fn os(s: &str) -> OsString {
    s.into()
}

/// Host processes whose command line (arguments joined by spaces) satisfies `pred`.
pub fn host_processes(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| pred(&String::from_utf8_lossy(&c).replace('\0', " ")))
                .unwrap_or(false)
        })
        .collect()
}

/// Host processes whose command line starts with `prefix`: the program itself, not a process
/// that merely mentions it in its arguments.
pub fn host_processes_starting_with(prefix: &str) -> Vec<i32> {
    host_processes(|cmd| cmd.starts_with(prefix))
}

/// Host processes whose command line contains `needle`.
pub fn host_processes_matching(needle: &str) -> Vec<i32> {
    host_processes(|cmd| cmd.contains(needle))
}

/// A child process killed when the guard drops, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A git repository in a temporary directory; `git(args)` runs git there and returns stdout.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Writes `file` and commits it.
    pub fn commit(&self, file: &str, content: &str, message: &str) {
        std::fs::write(self.dir.path().join(file), content).unwrap();
        self.git(&["add", file]);
        self.git(&["commit", "-qm", message]);
    }
}

/// Whether every tool is here (see `require!`).
pub fn available(test: &str, tools: &[&std::ffi::OsStr]) -> bool {
    let found = |tool: &std::ffi::OsStr| {
        let p = Path::new(tool);
        if p.components().count() > 1 {
            return p.exists();
        }
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
    };
    let missing: Vec<String> =
        tools.iter().filter(|t| !found(t)).map(|t| t.to_string_lossy().into_owned()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test}: needs {} (.ci/run installs it)", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

/// Debian's chromium, or the one CHROMIUM names.
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// A package of tests/node (installed with `npm ci --prefix tests/node`).
pub fn node_dir(package: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/node_modules").join(package)
}

/// schemathesis' command in tests/python's virtual environment.
pub fn schemathesis() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/.venv/bin/st")
}
