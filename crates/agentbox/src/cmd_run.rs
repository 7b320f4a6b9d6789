use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::time::Duration;

use agentbox_jail::{
    build_plan, resolve, start, wait_foreground, AfterEnd, HostContext, JailError, Outcome, RealFs,
    SandboxRequest, Stdio,
};

use agentbox_core::{EgressSpec, NetworkMode};

use crate::cli::RunArgs;
use crate::exit;
use agentbox_engine::config::Config;
use agentbox_engine::secrets::Secrets;
use agentbox_engine::Home;

fn request(args: RunArgs, home: Option<&Home>) -> anyhow::Result<SandboxRequest> {
    let network = args.sandbox.network_mode(None);
    let (egress, ca) = match (network, home) {
        (NetworkMode::Proxy, Some(home)) => {
            let flags = args.sandbox.egress();
            agentbox_engine::egress::check_flag_secrets(&flags, &Secrets::load(home)?)?;
            let spec = agentbox_engine::egress::build_spec(&Config::load(home)?, None, &[], &flags)?;
            let ca =
                if spec.secrets.is_empty() { None } else { Some(agentbox_engine::egress::ca_files(home)?) };
            (spec, ca)
        }
        _ => (EgressSpec::default(), None),
    };
    // `-v NAME:/path` binds volume NAME, as with spawn.
    let mounts = match home {
        Some(h) => {
            args.mounts.iter().map(|m| agentbox_engine::volumes::resolve(h, m)).collect::<Result<_, _>>()?
        }
        None => args.mounts,
    };
    Ok(SandboxRequest {
        command: args.command,
        workspace: args.workspace,
        workdir: args.workdir,
        mounts,
        limits: args.sandbox.limits(),
        network,
        egress,
        ca,
        env: args.sandbox.env,
        hostname: args.hostname,
        uid: args.uid,
        gid: args.gid,
        timeout: args.timeout.map(Duration::from_secs),
        home: None,
        hidden: Vec::new(),
        backend: args.sandbox.backend.unwrap_or_default(),
    })
}

/// pid 1 programs known to reap every orphan they inherit (their `/proc/1/comm`).
const REAPING_INITS: &[&str] = &[
    "systemd",
    "init",
    "tini",
    "docker-init",
    "dumb-init",
    "catatonit",
    "s6-svscan",
    "runit",
    "openrc-init",
];

/// How `run` ends once its command has ended. By default it leaves the sandbox's init, still
/// tearing down its mounts, to whoever inherits this process's children, as bubblewrap leaves its
/// own pid 1. It reaps init itself when that may be a process that never would, so that each run
/// would leave a zombie: when this process's parent is its PID namespace's pid 1 and that is not
/// an init known to reap (a container whose pid 1 is the program that runs agentbox, and waits
/// only for its own children), or when `AGENTBOX_RUN_REAP=1` says so (such a pid 1 further up).
fn after_end() -> AfterEnd {
    if std::env::var_os("AGENTBOX_RUN_REAP").is_some_and(|v| v == "1") {
        return AfterEnd::Reap;
    }
    if nix::unistd::getppid().as_raw() == 1 {
        let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        if !REAPING_INITS.contains(&comm.trim_end()) {
            return AfterEnd::Reap;
        }
    }
    AfterEnd::LeaveToExit
}

fn stdio(force: bool, never: bool) -> Stdio {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if never || !(force || interactive) {
        return no_terminal_stdio();
    }
    pty_stdio()
}

/// Stdio for a command without a terminal of its own: the caller's files and pipes as they are,
/// but never the caller's terminal (whoever holds it can read what the person types later and
/// write to their screen): if any of stdin, stdout or stderr is one, all three go through pipes
/// that agentbox relays.
pub fn no_terminal_stdio() -> Stdio {
    let any_tty =
        std::io::stdin().is_terminal() || std::io::stdout().is_terminal() || std::io::stderr().is_terminal();
    if any_tty {
        Stdio::Pipes
    } else {
        Stdio::Inherit
    }
}

/// A terminal inside the sandbox, sized and configured like the caller's.
pub fn pty_stdio() -> Stdio {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    Stdio::Pty {
        size: agentbox_sys::get_winsize(stdout.as_fd())
            .or_else(|_| agentbox_sys::get_winsize(stdin.as_fd()))
            .ok(),
        termios: nix::sys::termios::tcgetattr(stdin.as_fd()).ok(),
    }
}

fn fail_msg(msg: &str) -> i32 {
    eprintln!("agentbox: {msg}");
    exit::AGENTBOX_FAILED
}

pub fn fail(e: &JailError) -> i32 {
    eprintln!("agentbox: {e}");
    match e {
        JailError::Exec { not_found: true, .. } => exit::NOT_FOUND,
        JailError::Exec { .. } => exit::CANNOT_EXECUTE,
        _ => exit::AGENTBOX_FAILED,
    }
}

pub fn run(args: RunArgs) -> i32 {
    let (tty, no_tty, dry_run, verbose) = (args.tty, args.no_tty, args.dry_run, args.verbose);
    let host = match HostContext::current() {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    // AGENTBOX_HOME (config, CA, stored secrets; the VM's initramfs) matters only to the proxy
    // mode and the VM backend.
    let vm = args.sandbox.backend == Some(agentbox_core::Backend::Vm);
    let home = match (args.sandbox.network_mode(None), vm) {
        (NetworkMode::Proxy, _) | (_, true) => match Home::open() {
            Ok(h) => Some(h),
            Err(e) => return fail_msg(&format!("{e:#}")),
        },
        _ => None,
    };
    let req = match request(args, home.as_ref()) {
        Ok(r) => r,
        Err(e) => return fail_msg(&format!("{e:#}")),
    };
    let spec = match resolve(req, &host) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    drop(host);
    let (plan, report) = match (&home, spec.backend) {
        (Some(home), agentbox_core::Backend::Vm) => {
            match agentbox_engine::vm::assets(home).and_then(|a| {
                if !dry_run {
                    let mut making = || eprintln!("agentbox: {}...", agentbox_engine::vm::MAKING_SNAPSHOT);
                    if let Some(line) = agentbox_engine::vm::prepare_snapshot(&spec, &a, &mut making) {
                        eprintln!("agentbox: {line}");
                    }
                }
                agentbox_supervisor::vm_plan(&spec, &a).map_err(agentbox_engine::Error::internal)
            }) {
                Ok(planned) => planned,
                Err(e) => return fail_msg(&format!("{e:#}")),
            }
        }
        _ => (build_plan(&spec, &RealFs), None),
    };
    if dry_run {
        match serde_json::to_string_pretty(&plan) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("agentbox: cannot print the plan: {e}");
                return exit::AGENTBOX_FAILED;
            }
        }
        return 0;
    }
    if spec.network == NetworkMode::Full {
        eprintln!("agentbox: warning: --network full shares the host's network, including services on host loopback");
    }
    if let Some(note) = root_workspace_note(&spec.workspace, &plan) {
        eprintln!("agentbox: note: {note}");
    }
    let mut running = match start(&plan, stdio(tty, no_tty), false) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    // A VM restored from its snapshot: its host says if the restore did not start (not fatal
    // unheard; the next VM only tries it again).
    let _ = report.map(agentbox_supervisor::RestoreReport::listen);
    // The proxy (and the secrets it loads) only now that the sandbox exists.
    if let (Some(listener), Some(home)) = (running.proxy_listener.take(), &home) {
        let started = agentbox_engine::egress::proxy_config(home, "run", &spec.egress, None)
            .and_then(|cfg| Ok(agentbox_proxy::start(listener, cfg)?));
        if let Err(e) = started {
            let _ = nix::sys::signal::kill(running.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(running.pid, None);
            return fail_msg(&format!("cannot start the egress proxy: {e:#}"));
        }
    }
    if verbose {
        for note in &running.limit_notes {
            eprintln!("agentbox: limit {note}");
        }
    }
    exit_code(wait_foreground(running, spec.timeout, after_end()), spec.timeout)
}

/// As root, the command runs as an unprivileged host uid: say so when the workspace is not that
/// uid's to write, before the command runs into `Permission denied`.
fn root_workspace_note(workspace: &std::path::Path, plan: &agentbox_jail::Plan) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let m = std::fs::metadata(workspace).ok()?;
    let writable = m.uid() == plan.host_uid
        || (m.gid() == plan.host_gid && m.mode() & 0o020 != 0)
        || m.mode() & 0o002 != 0;
    (!writable).then(|| {
        format!(
            "agentbox runs as root, so the command runs as the unprivileged host uid {uid} (never as root), \
             which cannot write {ws}; to let it, `chown -R {uid}:{gid} {ws}` (or run agentbox as an ordinary user)",
            uid = plan.host_uid,
            gid = plan.host_gid,
            ws = workspace.display()
        )
    })
}

/// The exit status of a foreground sandbox (see `exit`).
pub fn exit_code(outcome: Result<Outcome, JailError>, timeout: Option<Duration>) -> i32 {
    match outcome {
        Ok(Outcome::Exited(code)) => code,
        Ok(Outcome::Signaled(sig)) => 128 + sig,
        Ok(Outcome::TimedOut) => {
            let secs = timeout.map(|t| t.as_secs()).unwrap_or(0);
            eprintln!("agentbox: timed out after {secs}s; the sandbox and everything in it was killed");
            exit::TIMED_OUT
        }
        Err(e) => fail(&e),
    }
}
