//! The hidden roles: this binary started by itself, as an agent's supervisor (`__supervise`), the
//! server's spawner (`__spawn`), the task runner (`__tasks`) and its cloner (`__clone`), and the
//! VM backend's helpers (`__vmm`, `__vmexec`, `__vmfwd`), and `cp`'s sandbox side from a process
//! with threads (`__archive`).
//!
//! They are dispatched from argv before the command line is parsed, so they are not part of the
//! CLI (not in help, not in shell completion), and before anything could start a thread: most of
//! them clone sandboxes.

use std::ffi::OsString;
use std::path::PathBuf;

/// A role and its arguments.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Supervise {
        name: String,
    },
    Spawn,
    Tasks,
    Clone {
        url: String,
        dir: PathBuf,
        git_ref: Option<String>,
    },
    VmHost,
    VmExec {
        tty: bool,
        command: Vec<OsString>,
    },
    VmForward {
        port: u16,
    },
    Archive {
        args: Vec<OsString>,
    },
    /// `keyed`: every connection must first send the key read from stdin (the server's proxy).
    Publish {
        name: String,
        port: u16,
        host_port: u16,
        keyed: bool,
    },
}

fn text(arg: &OsString) -> Result<String, String> {
    arg.to_str().map(str::to_string).ok_or_else(|| format!("{arg:?} is not UTF-8"))
}

impl Role {
    /// `None` when `args` names no role (an ordinary command line).
    fn parse(args: &[OsString]) -> Option<Result<Self, String>> {
        let name = args.get(1)?.to_str()?;
        let rest = &args[2..];
        let role = match (name, rest) {
            ("__supervise", [agent]) => text(agent).map(|name| Role::Supervise { name }),
            ("__spawn", []) => Ok(Role::Spawn),
            ("__tasks", []) => Ok(Role::Tasks),
            ("__clone", [url, dir]) => {
                text(url).map(|url| Role::Clone { url, dir: dir.into(), git_ref: None })
            }
            ("__clone", [url, dir, flag, r]) if flag == "--ref" => {
                text(url).and_then(|url| Ok(Role::Clone { url, dir: dir.into(), git_ref: Some(text(r)?) }))
            }
            ("__vmm", []) => Ok(Role::VmHost),
            ("__archive", rest) if (3..=4).contains(&rest.len()) => Ok(Role::Archive { args: rest.to_vec() }),
            ("__vmexec", rest) => {
                let (tty, rest) = match rest.first() {
                    Some(f) if f == "--tty" => (true, &rest[1..]),
                    _ => (false, rest),
                };
                let command = match rest.first() {
                    Some(f) if f == "--" => &rest[1..],
                    _ => rest,
                };
                match command.is_empty() {
                    true => Err("no command".to_string()),
                    false => Ok(Role::VmExec { tty, command: command.to_vec() }),
                }
            }
            ("__vmfwd", [port]) => text(port)
                .and_then(|p| p.parse().map_err(|_| format!("invalid port {p}")))
                .map(|port| Role::VmForward { port }),
            ("__publish", [agent, port, host, keyed @ ..]) if keyed.len() <= 1 => (|| {
                let num = |a: &OsString| text(a)?.parse::<u16>().map_err(|_| format!("invalid port {a:?}"));
                let keyed = match keyed.first().map(text).transpose()?.as_deref() {
                    None => false,
                    Some("--keyed") => true,
                    Some(other) => return Err(format!("unknown option {other}")),
                };
                Ok(Role::Publish { name: text(agent)?, port: num(port)?, host_port: num(host)?, keyed })
            })(),
            (n, _) if n.starts_with("__") => Err("unknown role or wrong arguments".to_string()),
            _ => return None,
        };
        Some(role.map_err(|e| format!("{name}: {e}")))
    }
}

fn report(result: agentbox_engine::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentbox: {e}");
            1
        }
    }
}

/// Runs the role `args` name, if they name one; its exit status.
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    let role = match Role::parse(args)? {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentbox: {e} (an internal role, started by agentbox itself)");
            return Some(2);
        }
    };
    // The supervisor keeps SIGPIPE ignored (a client that disconnects must not kill it), and so
    // does `__archive` (a sandbox tar that stops reading early must leave it alive to say why).
    // So does `__publish`: a client that goes away mid-relay ends that connection, not the forward.
    if !matches!(role, Role::Supervise { .. } | Role::Archive { .. } | Role::Publish { .. }) {
        let _ = agentbox_sys::default_disposition([nix::sys::signal::Signal::SIGPIPE]);
    }
    Some(match role {
        Role::Supervise { name } => report(agentbox_engine::supervise::supervise_role(&name, None)),
        Role::Spawn => report(agentbox_engine::spawn::spawn_role()),
        Role::Tasks => report(agentbox_engine::tasks::runner::runner_role()),
        Role::Clone { url, dir, git_ref } => {
            report(agentbox_engine::tasks::runner::clone_role(&url, &dir, git_ref.as_deref()))
        }
        Role::VmHost => crate::cmd_vm::host_role(),
        Role::VmExec { tty, command } => agentbox_vm::exec_client::run_exec(command, tty),
        Role::VmForward { port } => agentbox_vm::fwd::run_forward(port),
        Role::Archive { args } => agentbox_engine::cp::archive_role(&args),
        Role::Publish { name, port, host_port, keyed } => {
            report(agentbox_engine::ports::publish_role(&name, port, host_port, keyed))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Option<Result<Role, String>> {
        let args: Vec<OsString> =
            std::iter::once("agentbox").chain(args.iter().copied()).map(Into::into).collect();
        Role::parse(&args)
    }

    #[test]
    fn roles_and_their_arguments() {
        assert_eq!(parse(&["list"]), None);
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["__supervise", "a"]), Some(Ok(Role::Supervise { name: "a".into() })));
        assert_eq!(
            parse(&["__clone", "u", "/d", "--ref", "main"]),
            Some(Ok(Role::Clone { url: "u".into(), dir: "/d".into(), git_ref: Some("main".into()) }))
        );
        assert_eq!(
            parse(&["__vmexec", "--tty", "--", "sh", "-c", "x"]),
            Some(Ok(Role::VmExec { tty: true, command: vec!["sh".into(), "-c".into(), "x".into()] }))
        );
        assert_eq!(parse(&["__vmfwd", "3128"]), Some(Ok(Role::VmForward { port: 3128 })));
        assert_eq!(
            parse(&["__publish", "a", "3000", "0", "--keyed"]),
            Some(Ok(Role::Publish { name: "a".into(), port: 3000, host_port: 0, keyed: true }))
        );
        assert_eq!(
            parse(&["__publish", "a", "3000", "8080"]),
            Some(Ok(Role::Publish { name: "a".into(), port: 3000, host_port: 8080, keyed: false }))
        );
        for bad in [
            &["__supervise"][..],
            &["__spawn", "x"],
            &["__vmfwd", "http"],
            &["__vmexec"],
            &["__nope"],
            &["__publish", "a", "1", "2", "--other"],
            &["__publish", "a", "1", "2", "--keyed", "x"],
        ] {
            assert!(matches!(parse(bad), Some(Err(_))), "{bad:?}");
        }
    }
}
