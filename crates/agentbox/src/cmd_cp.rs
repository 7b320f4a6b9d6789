//! `cp SRC DST` (docker cp): one side `NAME:PATH` in an agent, the other a host path or `-`;
//! and `port NAME PORT [HOSTPORT]`, the other way into a running agent from here.

use std::path::PathBuf;

use agentbox_engine::cp::{self, HostEnd, HostSource, Report};
use agentbox_engine::Home;
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

pub fn cp(args: CpArgs) -> Result<i32> {
    let home = Home::open()?;
    let report = match (end(&args.src), end(&args.dst)) {
        (End::Agent(name, src), End::Host(dst)) => cp::copy_out(&home, &name, &src, HostEnd::Path(dst))?,
        (End::Agent(name, src), End::Stream) => {
            let mut out = std::io::stdout().lock();
            if std::io::IsTerminal::is_terminal(&out) {
                bail!("a tar stream is not for a terminal: pipe it (`| tar -t`) or give a host path");
            }
            cp::copy_out(&home, &name, &src, HostEnd::Stream(&mut out))?
        }
        (End::Host(src), End::Agent(name, dst)) => cp::copy_in(&home, &name, HostSource::Path(src), &dst)?,
        (End::Stream, End::Agent(name, dst)) => {
            cp::copy_in(&home, &name, HostSource::Stream(&mut std::io::stdin().lock()), &dst)?
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
    // The line a script reads to learn the port (HOSTPORT 0).
    println!("{} -> {}:{}", forward.local_addr()?, args.name, args.port);
    std::io::stdout().flush()?;
    let one = agentbox_sys::SingleThreaded::check()
        .map_err(|e| anyhow::anyhow!("forwarding needs a single-threaded start: {e}"))?;
    forward.run(&one)?;
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
