//! Starting an agent's supervisor (`__supervise`, the same binary, detached) and typing its
//! first keys: shared by spawn and restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use agentbox_core::Field;

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::home::Home;

/// Types the profile's startup keys, then the prompt, into a freshly started agent.
pub fn type_after_start(dir: &Path, startup_keys: &[u8], prompt: Option<&[u8]>) -> Result<()> {
    if !startup_keys.is_empty() {
        agentbox_supervisor::send_input(dir, startup_keys).context("typing the profile's startup keys")?;
    }
    if let Some(p) = prompt {
        agentbox_supervisor::send_input(dir, p).context("typing the prompt")?;
    }
    Ok(())
}

/// The supervisor forked from this process rather than exec'd, when it can be: it saves starting
/// the binary again and re-reading what this process has (a whole process start of the 2 to 3 a
/// spawn costs). Only from a single-threaded process with no store connection open (a child
/// must not inherit SQLite's per-process lock state; it opens its own), and when the argument
/// area can show `agentbox __supervise NAME`, which `ps`, people and the liveness check look
/// for. Returns the read end of its ready line; `None`: exec it instead.
fn fork_supervisor(
    home: &Home,
    name: &str,
    log: &std::fs::File,
    fresh: Option<crate::supervise::Fresh>,
) -> Result<Option<std::fs::File>> {
    use std::ffi::OsStr;
    use std::io::Write;
    use std::os::fd::AsFd;
    if agentbox_store::open_connections() > 0 {
        return Ok(None);
    }
    let Ok(one) = agentbox_sys::SingleThreaded::check() else { return Ok(None) };
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let title = [argv0.as_os_str(), OsStr::new("__supervise"), OsStr::new(name)];
    if !agentbox_sys::cmdline_fits(&title) {
        return Ok(None);
    }
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("a pipe for the supervisor")?;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    // Nothing this process has buffered may come out of the child as well.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    match agentbox_sys::fork_process(&one).context("starting the supervisor")? {
        agentbox_sys::Child::Parent(_) => {
            drop(write);
            Ok(Some(std::fs::File::from(read)))
        }
        agentbox_sys::Child::Child => {
            // The supervisor: never returns into the caller.
            let ready = nix::unistd::dup2_stdin(null.as_fd())
                .and_then(|_| nix::unistd::dup2_stdout(write.as_fd()))
                .and_then(|_| nix::unistd::dup2_stderr(log.as_fd()))
                .and_then(|_| agentbox_sys::close_from(&one, 3, None))
                .and_then(|_| agentbox_sys::set_cmdline(&title))
                .and_then(|_| nix::unistd::chdir("/"));
            // As the exec'd supervisor has it: a write to a client gone away is an error, not death.
            let _ = agentbox_sys::ignore_signal(nix::sys::signal::Signal::SIGPIPE);
            let code = match ready {
                Ok(()) => {
                    std::env::set_var("AGENTBOX_HOME", &home.root);
                    match crate::supervise::supervise_role(name, fresh) {
                        Ok(code) => code,
                        Err(e) => {
                            eprintln!("agentbox: {e:#}");
                            1
                        }
                    }
                }
                Err(e) => {
                    eprintln!("agentbox: setting up the supervisor: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// Starts the agent's supervisor and waits for its first line: `ok`, or why it could not start.
/// Then starts the forwarders of the ports the agent publishes (`publish`, from its spec).
/// `fresh`: the agent a spawn just recorded, for a supervisor forked from it (an exec'd one
/// reads the agent from the store).
pub fn start_supervisor(
    home: &Home,
    name: &str,
    dir: &Path,
    publish: &[agentbox_core::PortMap],
    fresh: Option<crate::supervise::Fresh>,
) -> Result<()> {
    let log = std::fs::File::create(dir.join("supervisor.log")).context("creating supervisor.log")?;
    let (mut reader, mut child) = match fork_supervisor(home, name, &log, fresh)? {
        Some(ready) => (Some(BufReader::new(ready)), None),
        None => {
            let mut child = crate::home::self_command()
                .arg("__supervise")
                .arg(name)
                .env("AGENTBOX_HOME", &home.root)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .context("starting the supervisor")?;
            (
                child
                    .stdout
                    .take()
                    .map(|o| BufReader::new(std::fs::File::from(std::os::fd::OwnedFd::from(o)))),
                Some(child),
            )
        }
    };
    let mut line = String::new();
    if let Some(out) = reader.as_mut() {
        // Notes come first (a VM's snapshot in the making), for the person who waits.
        loop {
            line.clear();
            out.read_line(&mut line).context("waiting for the supervisor")?;
            match line.trim_end().strip_prefix("note: ") {
                Some(note) => eprintln!("agentbox: {note}"),
                None => break,
            }
        }
    }
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ok" => {
            crate::ports::publish_for(home, name, dir, publish);
            Ok(())
        }
        Some(msg) => {
            let mut second = String::new();
            if let Some(out) = reader.as_mut() {
                let _ = out.read_line(&mut second);
            }
            if second.trim_end() == agentbox_supervisor::INVALID_COMMAND {
                bail!(Error::invalid(msg).for_field(Field::Command));
            }
            bail!("{msg}")
        }
        None => {
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            bail!("the supervisor exited before the agent started: {}", log.trim())
        }
    }
}
