//! `cp SRC DST` (docker cp): one side `NAME:PATH` in an agent, the other a host path or `-`;
//! and `port NAME PORT [HOSTPORT]`, the other way into a running agent from here.

use std::path::PathBuf;

use agentbox_engine::control::Control;
use agentbox_engine::cp::{self, Report};
use agentbox_engine::{Home, Kind};
use anyhow::{bail, Result};

use crate::cli::CpArgs;

/// One side of a copy as typed.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Agent(String, PathBuf),
    Host(PathBuf),
    Stream,
}

/// `NAME:PATH` when what is before the first ':' is an agent's name (no '/'); `-`; else a host
/// path (one with a ':' of its own is written `./a:b`).
fn end(s: &str) -> End {
    if s == "-" {
        return End::Stream;
    }
    match s.split_once(':') {
        Some((name, path)) if agentbox_core::validate_name(name).is_ok() => {
            End::Agent(name.to_string(), PathBuf::from(if path.is_empty() { "." } else { path }))
        }
        _ => End::Host(PathBuf::from(s)),
    }
}

fn said(report: &Report) {
    for s in &report.skipped {
        eprintln!("agentbox: skipped {s}");
    }
}

/// A pipe between the copy's two sides; close-on-exec, so a helper started meanwhile does not
/// hold an end open (the reader would never see the end).
fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

/// Runs `host` (the host side: packing or unpacking) on a thread while `sandbox` (the agent's
/// side, here or on a server) runs here, the two joined by a pipe. When both fail, the side that
/// stopped first says why: a host side that stops reading ends the sandbox's tar with a broken
/// pipe, and a sandbox that sends nothing (no such path) leaves the host side with nothing.
fn joined<T: Send + 'static>(
    host: impl FnOnce() -> agentbox_engine::Result<T> + Send + 'static,
    sandbox: impl FnOnce() -> agentbox_engine::Result<u64>,
) -> Result<T> {
    let worker = std::thread::spawn(host);
    let there = sandbox();
    let here = worker.join().map_err(|_| anyhow::anyhow!("the copy's host side failed"))?;
    match (here, there) {
        (Ok(v), Ok(_)) => Ok(v),
        // The host side found nothing, or its pipe was closed: the sandbox's side says why.
        (Err(host), Err(why))
            if host.kind() == Kind::NotFound || host.to_string().contains("Broken pipe") =>
        {
            Err(why.into())
        }
        (Err(e), _) => Err(e.into()),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}

pub fn cp(c: &dyn Control, args: CpArgs) -> Result<i32> {
    // Its pipes and helpers are its own: a side that stops reading is an error said, not a
    // silent death by SIGPIPE.
    let _ = agentbox_sys::ignore_signal(nix::sys::signal::Signal::SIGPIPE);
    let report = match (end(&args.src), end(&args.dst)) {
        (End::Agent(name, src), End::Host(dst)) => {
            // The name it lands under is the one typed, never one the agent's stream chooses.
            let base = cp::source_name(&src)?;
            let (mut from, mut to) = pipe()?;
            joined(
                move || {
                    let unpacked = cp::unpack_on_host(&mut from, &dst, &base);
                    // A tar's record is padded past its end marker: read to the end, so the
                    // sending side finishes instead of meeting a closed pipe.
                    if unpacked.is_ok() {
                        let _ = std::io::copy(&mut from, &mut std::io::sink());
                    }
                    unpacked
                },
                move || {
                    let sent = c.archive_get(&name, &src, &mut to);
                    drop(to);
                    sent
                },
            )?
        }
        (End::Agent(name, src), End::Stream) => {
            let mut out = std::io::stdout().lock();
            if std::io::IsTerminal::is_terminal(&out) {
                bail!("a tar stream is not for a terminal: pipe it (`| tar -t`) or give a host path");
            }
            c.archive_get(&name, &src, &mut out)?;
            Report::default()
        }
        (End::Host(src), End::Agent(name, dst)) => {
            let top = cp::top_name(&src)?;
            let (mut from, mut to) = pipe()?;
            let host_top = top.clone();
            joined(
                move || {
                    let packed = cp::pack_on_host(&src, &host_top, &mut to);
                    drop(to);
                    packed
                },
                move || c.archive_put(&name, &dst, Some(&top), &mut from),
            )?
        }
        (End::Stream, End::Agent(name, dst)) => {
            c.archive_put(&name, &dst, None, &mut std::io::stdin().lock())?;
            Report::default()
        }
        (End::Agent(..), End::Agent(..)) => {
            bail!("both sides are agents: copy through the host (agentbox cp A:PATH DIR, then agentbox cp DIR B:PATH)")
        }
        _ => bail!("one side must be an agent's NAME:PATH (the other a host path or -)"),
    };
    said(&report);
    Ok(0)
}

pub fn port(args: crate::cli::PortArgs) -> Result<i32> {
    use std::io::Write;
    let home = Home::open()?;
    let forward =
        agentbox_engine::ports::prepare(&home, &args.name, args.port, args.host_port.unwrap_or(args.port))?;
    let one = agentbox_sys::SingleThreaded::check()
        .map_err(|e| anyhow::anyhow!("forwarding needs a single-threaded start: {e}"))?;
    let joined = forward.join(&one)?;
    // Said once it works: the line a script reads to learn the port (HOSTPORT 0).
    println!("{} -> {}:{}", joined.local_addr()?, args.name, args.port);
    std::io::stdout().flush()?;
    joined.serve()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_read_as_docker_does() {
        assert_eq!(end("web:/srv/x"), End::Agent("web".into(), "/srv/x".into()));
        assert_eq!(end("web:"), End::Agent("web".into(), ".".into()));
        assert_eq!(end("-"), End::Stream);
        assert_eq!(end("./a:b"), End::Host("./a:b".into()));
        assert_eq!(end("/tmp/a:b"), End::Host("/tmp/a:b".into()));
        assert_eq!(end("Web:x"), End::Host("Web:x".into()));
    }
}
