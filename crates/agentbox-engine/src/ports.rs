//! `port NAME PORT [HOSTPORT]`: a host loopback port forwarded to a port the agent listens on
//! inside its own network namespace (`kubectl port-forward`'s habit). The agent's egress policy
//! is untouched: nothing new is reachable from inside, only the agent's own loopback from here.
//!
//! The forwarding process binds the host side first, then joins the sandbox's user and network
//! namespaces (handles from its supervisor, as `exec` gets them); every connection it accepts
//! on the host listener gets a socket made on the sandbox's side, connected to the agent's
//! 127.0.0.1 (or ::1), and the bytes are relayed both ways. It ends when the agent's supervisor
//! does (a restart makes a new network namespace: forward again).

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use agentbox_core::{AgentState, Backend, SandboxSpec};
use agentbox_store::AgentRecord;

use crate::agents;
use crate::error::{Context, Error, Result};
use crate::home::Home;

/// A forward made ready: the host side bound, the sandbox's handles in hand.
#[derive(Debug)]
pub struct Forward {
    home: Home,
    rec: AgentRecord,
    port: u16,
    listener: TcpListener,
    handles: agentbox_jail::SandboxHandles,
}

/// Binds 127.0.0.1:`host_port` (0: any free port) for agent `name`'s `port`.
pub fn prepare(home: &Home, name: &str, port: u16, host_port: u16) -> Result<Forward> {
    if port == 0 {
        return Err(Error::invalid("PORT: 0 is not a port the agent can listen on (1-65535)"));
    }
    let rec = agents::get(&home.store()?, name)?;
    if rec.state != AgentState::Running {
        return Err(Error::conflict(format!("agent '{name}' is {}; ports reach a running agent", rec.state)));
    }
    let spec = SandboxSpec::decode(&rec.spec)?;
    if spec.backend == Backend::Vm {
        return Err(Error::invalid(format!(
            "agent '{name}' runs in a VM: its ports are not forwarded yet (use an ns agent)"
        )));
    }
    if spec.network == agentbox_core::NetworkMode::Full {
        return Err(Error::invalid(format!(
            "agent '{name}' is on the host's network (--network full): reach 127.0.0.1:{port} directly"
        )));
    }
    let listener = TcpListener::bind(("127.0.0.1", host_port)).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrInUse {
            ": give another HOSTPORT (0 picks a free one)"
        } else {
            ""
        };
        Error::conflict(format!("binding 127.0.0.1:{host_port}: {e}{hint}"))
    })?;
    let handles = agentbox_supervisor::sandbox_handles(&agents::state_dir(&rec))?;
    Ok(Forward { home: home.clone(), rec, port, listener, handles })
}

impl Forward {
    /// Where the host side listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Joins the sandbox's network. Call it while the process is single-threaded (`one`):
    /// joining a user namespace needs that. The handles are let go once joined, so the forward
    /// does not keep the sandbox's other namespaces alive.
    pub fn join(self, one: &agentbox_sys::SingleThreaded) -> Result<Joined> {
        self.handles.join_network(one)?;
        let Forward { home, rec, port, listener, handles } = self;
        drop(handles);
        listener.set_nonblocking(true).context("the host listener")?;
        Ok(Joined { home, rec, port, listener, key: None })
    }
}

/// A forward on the sandbox's network, ready to serve.
#[derive(Debug)]
pub struct Joined {
    home: Home,
    rec: AgentRecord,
    port: u16,
    listener: TcpListener,
    /// What every connection must send first (the server's proxy knows it; nobody else does).
    key: Option<std::sync::Arc<[u8]>>,
}

impl Joined {
    /// Where the host side listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Forwards until that run of the agent ends (checked twice a second, however busy).
    pub fn serve(self) -> Result<()> {
        let mut checked = std::time::Instant::now();
        loop {
            if checked.elapsed() >= Duration::from_millis(500) {
                if !self.same_run() {
                    return Ok(());
                }
                checked = std::time::Instant::now();
            }
            match self.listener.accept() {
                Ok((host, _)) if self.key.is_some() => {
                    // Checked on its own thread: a client that sends nothing holds up no other.
                    let (key, port) = (self.key.clone(), self.port);
                    std::thread::spawn(move || {
                        let _ = host.set_nonblocking(false);
                        if key.is_some_and(|k| presents(&host, &k)) {
                            if let Ok(inner) = connect_inside(port) {
                                relay(host, inner);
                                return;
                            }
                        }
                        let _ = host.shutdown(Shutdown::Both);
                    });
                }
                Ok((host, _)) => {
                    let _ = host.set_nonblocking(false);
                    match self.connect() {
                        Ok(inner) => relay(host, inner),
                        Err(e) => {
                            eprintln!(
                                "agentbox: {}:{}: {e} (is the agent listening on 127.0.0.1:{}?)",
                                self.rec.name, self.port, self.port
                            );
                            let _ = host.shutdown(Shutdown::Both);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(100)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from(e).context("accepting a connection")),
            }
        }
    }

    /// Whether the agent still runs the sandbox whose network this process joined.
    fn same_run(&self) -> bool {
        let now = self.home.store().and_then(|s| agents::get(&s, &self.rec.name));
        agents::supervisor_alive(&self.rec)
            && now.is_ok_and(|r| r.generation == self.rec.generation && agents::is_live_state(&r.state))
    }

    /// A connection to the agent's port, made on the sandbox's side.
    fn connect(&self) -> std::io::Result<TcpStream> {
        connect_inside(self.port)
    }

    /// Lets in only connections that first send `key`.
    pub fn keyed(self, key: Vec<u8>) -> Self {
        Self { key: Some(key.into()), ..self }
    }
}

/// A connection to `port` on the agent's loopback (this process is in its network).
fn connect_inside(port: u16) -> std::io::Result<TcpStream> {
    let timeout = Duration::from_secs(5);
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout).or_else(|_| {
        TcpStream::connect_timeout(&SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), timeout)
    })
}

/// Whether `client` sends `key` first (within 5 seconds); compared in constant time.
fn presents(client: &TcpStream, key: &[u8]) -> bool {
    use std::io::Read;
    let mut got = vec![0u8; key.len()];
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let read = (&*client).read_exact(&mut got).is_ok();
    let _ = client.set_read_timeout(None);
    read && got.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl Joined {}

/// Refuses published ports that repeat a host port, or that something here listens on already.
pub fn check_publish(maps: &[agentbox_core::PortMap]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some(m) = maps.iter().find(|m| !seen.insert(m.host_port)) {
        return Err(Error::invalid(format!("host port {} is published twice", m.host_port)));
    }
    for m in maps {
        if let Err(e) = TcpListener::bind(("127.0.0.1", m.host_port)) {
            return Err(Error::conflict(format!("127.0.0.1:{} on this machine: {e}", m.host_port)));
        }
    }
    Ok(())
}

/// Starts a forwarder (`__publish`, detached) for each port the agent publishes, now that it
/// runs; each ends with this run of the agent. One that cannot bind is said, not fatal: the
/// agent runs.
pub fn publish_for(home: &Home, name: &str, dir: &std::path::Path, publish: &[agentbox_core::PortMap]) {
    for m in publish {
        if let Err(e) = start_publisher(home, name, dir, *m) {
            eprintln!("agentbox: warning: publishing 127.0.0.1:{} -> {name}:{}: {e}", m.host_port, m.port);
        }
    }
}

fn start_publisher(home: &Home, name: &str, dir: &std::path::Path, m: agentbox_core::PortMap) -> Result<()> {
    let (child, _) = start_forwarder(home, name, dir, m.port, m.host_port, None)?;
    // It ends with this run of the agent; whoever reaps it does not matter.
    drop(child);
    Ok(())
}

/// A forwarder to agent `name`'s `port` on a free host port, for the server's proxy
/// (`/agents/NAME/ports/PORT/`): where it listens, which run of the agent it reaches, and the
/// process (it ends with that run; the caller reaps it).
#[derive(Debug)]
pub struct ServerForward {
    pub addr: SocketAddr,
    pub generation: i64,
    pub child: std::process::Child,
    /// What each connection sends first: the forwarder lets in nothing else.
    pub key: Vec<u8>,
}

/// Starts a [`ServerForward`] to a running ns agent's `port`.
pub fn forward_for_server(home: &Home, name: &str, port: u16) -> Result<ServerForward> {
    if port == 0 {
        return Err(Error::invalid("PORT: 0 is not a port the agent can listen on (1-65535)"));
    }
    let rec = agents::get(&home.store()?, name)?;
    if rec.state != AgentState::Running {
        return Err(Error::conflict(format!("agent '{name}' is {}; ports reach a running agent", rec.state)));
    }
    let key = random_key()?;
    let (mut child, addr) = start_forwarder(home, name, &agents::state_dir(&rec), port, 0, Some(&key))?;
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::internal("the port forwarder did not say where it listens"));
    };
    Ok(ServerForward { addr, generation: rec.generation, child, key })
}

/// 32 random bytes.
fn random_key() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(key)
}

/// Starts `__publish NAME PORT HOSTPORT` detached and waits for its first line: `ok ADDR` once
/// it listens (the address it bound), or `error: ...`. With a key, the forwarder reads it from
/// its stdin (never its command line, which every local user can read).
fn start_forwarder(
    home: &Home,
    name: &str,
    dir: &std::path::Path,
    port: u16,
    host_port: u16,
    key: Option<&[u8]>,
) -> Result<(std::process::Child, Option<SocketAddr>)> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("publish.log"))
        .context("opening publish.log")?;
    let mut cmd = crate::home::self_command();
    cmd.arg("__publish").arg(name).arg(port.to_string()).arg(host_port.to_string());
    if key.is_some() {
        cmd.arg("--keyed");
    }
    let mut child = cmd
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(if key.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the spawning command is not for it.
        .process_group(0)
        .spawn()
        .context("starting the port forwarder")?;
    if let (Some(k), Some(mut stdin)) = (key, child.stdin.take()) {
        use std::io::Write;
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        // A failed write shows as the forwarder's own error line below.
        let _ = writeln!(stdin, "{hex}");
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line).context("waiting for the port forwarder")?;
    }
    match line.trim_end().strip_prefix("ok") {
        Some(rest) => Ok((child, rest.trim().parse().ok())),
        None => {
            let _ = child.wait();
            Err(Error::conflict(
                line.trim_end().strip_prefix("error: ").unwrap_or("it ended before it listened").to_string(),
            ))
        }
    }
}

/// The `__publish NAME PORT HOSTPORT [--keyed]` role: binds (waiting a moment for the previous run's
/// forwarder to let the port go), joins the sandbox's network, says `ok ADDR` on stdout (and
/// nothing more there), then forwards until this run of the agent ends.
pub fn publish_role(name: &str, port: u16, host_port: u16, keyed: bool) -> Result<i32> {
    use std::io::{BufRead, Write};
    let home = Home::open()?;
    let key = match keyed {
        false => None,
        true => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the key")?;
            let hex = line.trim();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            match bytes.filter(|b| b.len() == 32) {
                Some(b) => Some(b),
                None => {
                    println!("error: the key on stdin is not 64 hex digits");
                    return Ok(1);
                }
            }
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let forward = loop {
        match prepare(&home, name, port, host_port) {
            Ok(f) => break f,
            Err(e) if e.kind() == crate::Kind::Conflict && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                println!("error: {e}");
                return Ok(1);
            }
        }
    };
    let one = agentbox_sys::SingleThreaded::check()
        .map_err(|e| Error::internal(format!("forwarding needs a single-threaded start: {e}")))?;
    let joined = match forward.join(&one) {
        Ok(j) => match key {
            Some(k) => j.keyed(k),
            None => j,
        },
        Err(e) => {
            println!("error: {e}");
            return Ok(1);
        }
    };
    let bound = joined.local_addr()?;
    println!("ok {bound}");
    let _ = std::io::stdout().flush();
    // The spawner stops reading: stdout goes nowhere from here on.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    eprintln!("{bound} -> {name}:{port}");
    joined.serve()?;
    Ok(0)
}

/// Copies bytes both ways until each side has ended its half.
fn relay(a: TcpStream, b: TcpStream) {
    let pair = (a.try_clone(), b.try_clone());
    let (Ok(a2), Ok(b2)) = pair else { return };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    };
    std::thread::spawn(move || one_way(a, b2));
    std::thread::spawn(move || one_way(b, a2));
}

/// The TCP ports a running ns agent listens on inside its own network (as its sandbox's
/// `/proc/PID/net/tcp` and `tcp6` list them), on any address: what the dashboard offers to open.
pub fn listening(store: &agentbox_store::Store, name: &str) -> Result<Vec<u16>> {
    let rec = agents::get(store, name)?;
    if rec.state != AgentState::Running {
        return Err(Error::conflict(format!("agent '{name}' is {}; ports reach a running agent", rec.state)));
    }
    let pid = rec.sandbox_pid.ok_or_else(|| Error::conflict(format!("agent '{name}' has no sandbox yet")))?;
    let mut ports: Vec<u16> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|text| listening_in(&text))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The listening ports in one `/proc/net/tcp`-format table.
fn listening_in(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // `sl local_address rem_address st ...`; st 0A is LISTEN.
            if f.get(3) != Some(&"0A") {
                return None;
            }
            u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_read_from_the_table() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:0BB8 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0
";
        assert_eq!(listening_in(table), vec![3000, 8080]);
        assert_eq!(listening_in("garbage\nmore garbage here x y"), Vec::<u16>::new());
    }
}
