//! Threat model row "network" (as far as it applies without the proxy) and host sockets.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use crate::support::*;

#[test]
fn host_loopback_services_are_unreachable() {
    for who in modes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert_blocked(who, &attack(who, &[], &["connect-tcp", &addr]));
        assert_eq!(
            listener.accept().map(drop).unwrap_err().kind(),
            ErrorKind::WouldBlock,
            "as {who:?}: connection arrived"
        );
    }
}

#[test]
fn only_loopback_exists_without_network() {
    for who in modes() {
        let ws = workspace(who);
        let out = run_in(who, &ws, &[], &["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"]);
        assert_eq!(text(&out.stdout), "lo\n", "as {who:?}");
        // Loopback inside works: a server and a client in the same sandbox.
        let out = run_in(who, &ws, &[], &[PROBE, "loopback"]);
        assert_eq!(text(&out.stdout), "LOOPBACK ok\n", "as {who:?}: {}", text(&out.stderr));
    }
}

#[test]
fn host_unix_sockets_are_unreachable_by_path_and_abstract_name() {
    for who in modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _l = UnixListener::bind(&path).unwrap();
        assert_blocked(who, &attack(who, &[], &["connect-unix", path.to_str().unwrap()]));
        for sock in ["/run/dbus/system_bus_socket", "/var/run/docker.sock", "/tmp/.X11-unix/X0"] {
            assert_blocked(who, &attack(who, &[], &["connect-unix", sock]));
        }

        let name = format!("agentbox-it-{}-{who:?}", std::process::id());
        let addr = nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).unwrap();
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap();
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&s), &addr).unwrap();
        nix::sys::socket::listen(&s, nix::sys::socket::Backlog::new(4).unwrap()).unwrap();
        assert_blocked(who, &attack(who, &[], &["connect-abstract", &name]));
        // Even sharing the host's network namespace, Landlock's scope refuses abstract sockets
        // that were not created inside the sandbox.
        if agentbox_landlock_abi() >= 6 {
            assert_blocked(who, &attack(who, &["--network", "full"], &["connect-abstract", &name]));
        }
    }
}

fn agentbox_landlock_abi() -> i32 {
    let out = command(As::Caller).args(["doctor", "--json"]).output().unwrap();
    let text = text(&out.stdout);
    text.split("\"ABI ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn full_network_mode_shares_the_host_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = attack(As::Caller, &["--network", "full"], &["connect-tcp", &addr]);
    assert_eq!(text(&out.stdout).trim(), format!("ESCAPED: connect tcp {addr}"));
    assert!(text(&out.stderr).contains("warning: --network full"));
}
