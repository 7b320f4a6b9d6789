//! The supervisor: one per agent, detached from any terminal, alive as long as the agent.
//!
//! It starts the sandbox with a terminal and then runs one poll loop over a signalfd, the
//! terminal master, the attach socket's listener, and each connected client:
//! - every byte from the terminal is appended to the agent's log (before anything else, so nothing
//!   is lost even for a command that exits at once), fed to a vt100 screen model, and queued to
//!   attached clients;
//! - client frames type into the terminal, resize it, ask for the screen, or kill the sandbox;
//! - when the sandbox's init exits, the rest of the terminal output is drained, the exit status
//!   and final screen are recorded, attached clients are told, and the supervisor exits.
//!
//! It holds no async runtime. The sandbox is cloned before its only helper thread (the screen
//! model, see `screen`) starts, so an idle agent costs little more than its own processes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use agentbox_core::{AgentState, SandboxSpec};
use agentbox_jail::{build_plan, launch, Launched, RealFs, SandboxHandles, Stdio};
use agentbox_proxy::{ProxyConfig, ProxyHandle};
use agentbox_store::Store;
use agentbox_sys::{set_winsize, WinSize};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::hitl::{detect, HitlConfig};
use crate::idle::IdlePause;
use crate::logfile::LogFile;
use crate::protocol::{Decoder, Frame};
use crate::recorder::{Notifier, Record, Recorder};
use crate::screen::Screen;
use crate::{paths, SupervisorError};

/// A client that falls this far behind is disconnected rather than buffered without bound.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;
const DEFAULT_SIZE: WinSize = WinSize { rows: 24, cols: 80 };

/// Bytes queued for a client. Written from a moving start and compacted only once most of it is
/// sent, so a fast agent and a client that takes a socket buffer at a time cost one copy per
/// byte, not one shift of the whole queue per write.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    sent: usize,
}

impl Outbox {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn extend(&mut self, bytes: Vec<u8>) {
        self.buf.extend(bytes);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent >= (1 << 20) && self.sent * 2 >= self.buf.len() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: Outbox,
    attached: bool,
    read_only: bool,
    /// Close once `out` is flushed (one-shot requests).
    closing: bool,
}

/// What the supervisor needs to run one agent.
#[derive(Debug)]
pub struct SupervisorConfig {
    pub name: String,
    /// Which start of the agent this is (the store's `generation`): the supervisor writes the
    /// agent's row only while it is the current one.
    pub generation: i64,
    pub state_dir: PathBuf,
    pub store_path: PathBuf,
    /// The agent's lock (the engine's, per agent): held while the supervisor pauses or resumes
    /// it (`pause --after`).
    pub lock_path: PathBuf,
    pub spec: SandboxSpec,
    /// Builds the egress proxy's configuration (`proxy` mode). Called once the sandbox runs, so
    /// the secrets it loads were never in the memory the sandbox was cloned from.
    pub proxy: Option<ProxySetup>,
    /// Watch the screen for prompts that wait on a person; none: do not.
    pub hitl: Option<HitlConfig>,
    /// Told when a request opens and when the agent ends (bell, desktop, webhook).
    pub notify: Option<Notifier>,
    /// The guest kernel, initramfs and accelerator (`--backend vm`).
    pub vm: Option<crate::VmAssets>,
    /// The output log's cap in bytes (it and its one rotated file together).
    pub log_limit: u64,
    /// Work of the caller's done between the sandbox's launch and the wait for its command (it
    /// needs nothing of the sandbox), before `ok`.
    pub meanwhile: Option<Meanwhile>,
}

/// See [`SupervisorConfig::meanwhile`]: given the agent's store.
pub struct Meanwhile(pub Box<dyn FnOnce(&Store) + Send>);

impl std::fmt::Debug for Meanwhile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meanwhile")
    }
}

/// The agent's store, as [`supervise`] gets it.
pub enum AgentStore {
    /// Open already: the caller read the agent from it.
    Open(Store),
    /// Opened once the sandbox is launched, while it sets itself up, where it costs no time:
    /// for a caller that has the agent in memory (a supervisor forked by the spawn that recorded
    /// it). A failure before the launch opens it to record itself.
    Later(Box<dyn FnOnce() -> Result<Store, String> + Send>),
}

impl AgentStore {
    fn open(self) -> Result<Store, String> {
        match self {
            AgentStore::Open(store) => Ok(store),
            AgentStore::Later(open) => open(),
        }
    }
}

impl std::fmt::Debug for AgentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentStore::Open(_) => "AgentStore::Open",
            AgentStore::Later(_) => "AgentStore::Later",
        })
    }
}

/// See [`SupervisorConfig::proxy`].
pub struct ProxySetup(pub Box<dyn FnOnce() -> Result<ProxyConfig, String> + Send>);

impl std::fmt::Debug for ProxySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxySetup")
    }
}

fn nonblocking(fd: impl AsFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

struct Session {
    state_dir: PathBuf,
    recorder: Recorder,
    sandbox: Pid,
    master: OwnedFd,
    log: LogFile,
    screen: Screen,
    clients: HashMap<u64, Client>,
    next_id: u64,
    pending_input: Vec<u8>,
    /// When a person attached to the agent last typed: a prompt they are answering themselves
    /// opens no request.
    last_typed: Option<Instant>,
    /// Keys held back until the text before them has been written and shown: the Enter of a
    /// one-shot `send`, typed on its own so that a TUI takes the text as typed, then submits.
    held: Option<Held>,
    /// When the agent last wrote to its terminal.
    last_output: Instant,
    killed: bool,
    handles: Option<SandboxHandles>,
    /// The sandbox as the jail freezes it (its init and PID namespace).
    tree: agentbox_jail::SandboxTree,
    proxy: Option<ProxyHandle>,
    watch: Option<Watch>,
    idle: IdlePause,
    /// What the terminal is read into, kept for the session (an array on the stack was zeroed,
    /// all 64 KiB of it, at every read).
    read_buf: Vec<u8>,
}

/// Keys typed once the text before them is on the screen, as a person presses Enter after
/// seeing what they typed. A TUI that reads text and Enter in one go (a busy event loop on a
/// loaded machine reads them together even when they were written apart) takes the Enter as a
/// new line of a paste and leaves the prompt unsubmitted.
struct Held {
    keys: Vec<u8>,
    /// When the text before the keys was last written.
    since: Instant,
    /// The clients that sent them: answered (Ack) once the keys are typed.
    waiting: Vec<u64>,
}

/// The HITL watch: when the screen was last judged, and what it showed when a request opened.
struct Watch {
    cfg: HitlConfig,
    last_output: Instant,
    /// Output arrived since the screen was last judged.
    unjudged: bool,
    /// The screen has been judged after the idle time too.
    idle_judged: bool,
    /// The screen when the last request opened: the same screen does not open another.
    asked_on: Option<String>,
    /// The request this loop opened and has not seen leave the screen: its prompt and screen.
    open: Option<(String, String)>,
    /// A prompt was found while a person was typing at the agent: judge again at this time.
    deferred: Option<Instant>,
}

/// A prompt as a person reads it: the same words however the screen wraps them (a resize
/// redraws a prompt at another width; it is the same question).
fn same_prompt(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

impl Watch {
    /// When the screen should next be judged.
    fn due(&self) -> Option<Instant> {
        let by_output = if self.unjudged {
            Some(self.last_output + self.cfg.settle)
        } else if !self.idle_judged {
            Some(self.last_output + self.cfg.idle)
        } else {
            None
        };
        match (by_output, self.deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Session {
    fn on_output(&mut self, data: Vec<u8>) {
        // The log first: it is the record of what the agent did.
        let was_blocked = self.log.blocked();
        let blocked = self.log.write(&data).unwrap_or_else(|e| {
            agentbox_core::note(format_args!("writing the log: {e}"));
            false
        });
        self.note_disk(was_blocked, blocked);
        self.last_output = Instant::now();
        self.idle.activity();
        if let Some(w) = &mut self.watch {
            w.last_output = Instant::now();
            w.unjudged = true;
            w.idle_judged = false;
        }
        if self.clients.values().any(|c| c.attached) {
            let frame = Frame::Output(data.clone()).encode();
            for c in self.clients.values_mut().filter(|c| c.attached) {
                c.out.extend_from_slice(&frame);
            }
            self.clients.retain(|_, c| c.out.len() <= MAX_CLIENT_BACKLOG);
        }
        self.screen.feed(data);
    }

    /// Says (once each way) that output waits for disk space, and that it goes on.
    fn note_disk(&mut self, was_blocked: bool, blocked: bool) {
        match (was_blocked, blocked) {
            (false, true) => {
                agentbox_core::note(format_args!(
                    "the disk is full: the agent's output waits (nothing is lost)"
                ));
                self.recorder.send(Record::Journal {
                    event: "disk-full",
                    detail: "output waits for disk space; the agent is paused at its next write".into(),
                });
            }
            (true, false) => {
                agentbox_core::note(format_args!("disk space is back: output goes on"));
                self.recorder.send(Record::Journal { event: "disk-ok", detail: "output goes on".into() });
            }
            _ => {}
        }
    }

    /// Writes output that waited for disk space.
    fn retry_log(&mut self) {
        let blocked = self.log.flush().unwrap_or(false);
        self.note_disk(true, blocked);
    }

    /// Reads what the terminal has (up to a bound, so clients and signals are not starved) and
    /// hands it on as one batch: one log write, one screen-model message, one frame per client,
    /// however many small reads the terminal needed. Returns false once the terminal is closed.
    fn read_master(&mut self) -> bool {
        let buf = &mut self.read_buf;
        let mut batch = Vec::new();
        let mut open = true;
        // A batch goes to clients as one frame: it must fit the protocol's frame bound.
        const BATCH: usize = crate::protocol::MAX_FRAME - 64;
        while batch.len() < BATCH {
            let room = (BATCH - batch.len()).min(buf.len());
            match nix::unistd::read(self.master.as_fd(), &mut buf[..room]) {
                Ok(0) | Err(Errno::EIO) => {
                    open = false;
                    break;
                }
                Ok(n) => batch.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.on_output(batch);
        }
        open
    }

    fn handle(&mut self, id: u64, frame: Frame) {
        let mut reply: Option<Frame> = None;
        let mut close = false;
        match frame {
            Frame::Attach | Frame::Observe => {
                let replay = self.screen.with(|s| s.state_formatted().into_bytes());
                if let Some(c) = self.clients.get_mut(&id) {
                    c.attached = true;
                    c.read_only = frame == Frame::Observe;
                    c.out.extend(Frame::Output(replay).encode());
                }
            }
            Frame::Input(bytes) => {
                if self.clients.get(&id).is_some_and(|c| c.read_only) {
                    reply = Some(Frame::Error("this client is read-only".into()));
                } else {
                    // Input wakes an agent paused for idleness (`pause --after`).
                    self.idle.input();
                    if self.clients.get(&id).is_some_and(|c| c.attached) {
                        // A person typing: their keys as they are.
                        self.pending_input.extend_from_slice(&bytes);
                        self.last_typed = Some(Instant::now());
                    } else if self.type_text(&bytes) {
                        // Answered once its Enter is typed: `send` returns when the keys are in.
                        if let Some(held) = &mut self.held {
                            held.waiting.push(id);
                        }
                    } else {
                        reply = Some(Frame::Ack);
                        close = true;
                    }
                }
            }
            Frame::Resize { rows, cols } => {
                if let (Some(r), Some(c)) = (NonZeroU16::new(rows), NonZeroU16::new(cols)) {
                    if !self.clients.get(&id).is_some_and(|c| c.read_only) {
                        let _ = set_winsize(self.master.as_fd(), WinSize { rows, cols });
                        self.screen.resize(r, c);
                        self.log.resize(rows, cols);
                    }
                }
            }
            Frame::ScreenRequest { formatted } => {
                let text =
                    self.screen.with(|s| if formatted { s.contents_formatted() } else { s.contents() });
                reply = Some(Frame::Screen(text));
                close = true;
            }
            Frame::HandlesRequest => {
                let sent = match (&self.handles, self.clients.get(&id)) {
                    (Some(h), Some(c)) => {
                        let fds = h.raw_fds();
                        let cmsg = [ControlMessage::ScmRights(&fds)];
                        let frame = Frame::Handles.encode();
                        sendmsg::<()>(
                            c.stream.as_raw_fd(),
                            &[std::io::IoSlice::new(&frame)],
                            &cmsg,
                            MsgFlags::empty(),
                            None,
                        )
                        .is_ok()
                    }
                    _ => false,
                };
                if !sent {
                    reply = Some(Frame::Error("the sandbox's handles are not available".into()));
                }
                close = true;
            }
            Frame::Revoke { rule } => {
                reply = Some(match (&self.proxy, rule.parse::<agentbox_core::HostRule>()) {
                    (None, _) => {
                        Frame::Error("the agent does not use the egress proxy (--network proxy)".into())
                    }
                    (_, Err(e)) => Frame::Error(e),
                    (Some(proxy), Ok(r)) if proxy.revoke(&r) => {
                        self.recorder
                            .send(Record::Journal { event: "deny", detail: format!("{rule} (from now on)") });
                        Frame::Ack
                    }
                    (Some(_), Ok(_)) => {
                        Frame::Error(format!("{rule} is not on the running proxy's allowlist"))
                    }
                });
                close = true;
            }
            Frame::Allow { rule, once } => {
                reply = Some(match (&self.proxy, rule.parse::<agentbox_core::HostRule>()) {
                    (None, _) => {
                        Frame::Error("the agent does not use the egress proxy (--network proxy)".into())
                    }
                    (_, Err(e)) => Frame::Error(e),
                    (Some(proxy), Ok(r)) => {
                        proxy.allow(r, once);
                        let how = if once { "once" } else { "from now on" };
                        self.recorder
                            .send(Record::Journal { event: "allow", detail: format!("{rule} ({how})") });
                        Frame::Ack
                    }
                });
                close = true;
            }
            Frame::Kill => {
                self.killed = true;
                let _ = kill(self.sandbox, Signal::SIGKILL);
                agentbox_jail::thaw_for_kill(self.sandbox);
                reply = Some(Frame::Ack);
                close = true;
            }
            Frame::PauseAfter(ms) => {
                self.idle.set((ms > 0).then(|| std::time::Duration::from_millis(ms)));
                reply = Some(Frame::Ack);
                close = true;
            }
            Frame::Terminate => {
                // To the sandbox's init, which passes it to the command's process group.
                let _ = kill(self.sandbox, Signal::SIGTERM);
                reply = Some(Frame::Ack);
                close = true;
            }
            other => {
                reply = Some(Frame::Error(format!("unexpected frame {other:?}")));
                close = true;
            }
        }
        if let Some(c) = self.clients.get_mut(&id) {
            if let Some(r) = reply {
                c.out.extend(r.encode());
            }
            c.closing |= close;
        }
    }

    fn read_client(&mut self, id: u64) {
        let mut buf = [0u8; 16384];
        let mut frames = Vec::new();
        let mut drop_it = false;
        if let Some(c) = self.clients.get_mut(&id) {
            match c.stream.read(&mut buf) {
                Ok(0) => drop_it = true,
                Ok(n) => {
                    c.decoder.push(&buf[..n]);
                    loop {
                        match c.decoder.next_frame() {
                            Ok(Some(f)) => frames.push(f),
                            Ok(None) => break,
                            Err(_) => {
                                drop_it = true;
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => drop_it = true,
            }
        }
        // A one-shot request whose client has already gone (it gave up waiting while this
        // supervisor was stopped) is not carried out: its caller was told it failed.
        let abandoned = self.clients.get(&id).is_some_and(|c| !c.attached && peer_gone(&c.stream));
        if abandoned {
            frames.retain(|f| {
                !matches!(f, Frame::Input(_) | Frame::Kill | Frame::Terminate | Frame::Allow { .. })
            });
        }
        for f in frames {
            self.handle(id, f);
        }
        if drop_it {
            self.clients.remove(&id);
        }
    }

    fn flush_client(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        match c.stream.write(c.out.pending()) {
            Ok(n) => c.out.consume(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.clients.remove(&id);
                return;
            }
        }
        if c.out.is_empty() && c.closing {
            self.clients.remove(&id);
        }
    }

    /// Types a one-shot input (`send`, a prompt, a HITL answer) the way a person would: the text
    /// as a paste when the application asked for bracketed paste (mode 2004), then Enter as a key
    /// of its own, a moment after the text was written. Applications built on Ink and the like
    /// take text and Enter arriving in one read as a paste, and leave it unsubmitted.
    /// Whether keys were held back (the caller is answered once they are typed).
    fn type_text(&mut self, bytes: &[u8]) -> bool {
        let (text, enter) = match bytes.strip_suffix(b"\r") {
            Some(t) if !t.is_empty() => (t, true),
            _ => (bytes, false),
        };
        if text.contains(&b'\x1b') || !self.screen.with(|s| s.bracketed_paste()) {
            self.pending_input.extend_from_slice(text);
        } else {
            self.pending_input.extend_from_slice(b"\x1b[200~");
            self.pending_input.extend_from_slice(text);
            self.pending_input.extend_from_slice(b"\x1b[201~");
        }
        if enter {
            let held = self.held.get_or_insert_with(|| Held {
                keys: Vec::new(),
                since: Instant::now(),
                waiting: Vec::new(),
            });
            held.keys.push(b'\r');
            held.since = Instant::now();
        }
        enter
    }

    /// When held keys are due. Once everything before them is written: when the agent has
    /// drawn something since and then been quiet for a moment (it read the text and showed
    /// it), or a while after the text when it shows nothing or never stops drawing.
    fn held_due(&self) -> Option<Instant> {
        let held = self.held.as_ref().filter(|_| self.pending_input.is_empty())?;
        let latest = held.since + HOLD_ENTER_MAX;
        if self.last_output > held.since {
            Some((self.last_output + HOLD_ENTER).min(latest))
        } else {
            Some(latest)
        }
    }

    fn release_held(&mut self) {
        if self.held_due().is_some_and(|at| at <= Instant::now()) {
            if let Some(held) = self.held.take() {
                self.pending_input.extend_from_slice(&held.keys);
                for id in held.waiting {
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.out.extend(Frame::Ack.encode());
                        c.closing = true;
                    }
                }
            }
        } else if let Some(held) = &mut self.held {
            if !self.pending_input.is_empty() {
                // Still writing the text: the wait starts once it is written.
                held.since = Instant::now();
            }
        }
    }

    fn write_input(&mut self) {
        match nix::unistd::write(self.master.as_fd(), &self.pending_input) {
            Ok(n) => {
                self.pending_input.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.pending_input.clear(),
        }
    }

    /// Looks at the screen once output settled (and again after the idle time): opens a HITL
    /// request for a prompt that waits on a person, closes the open one once its prompt is gone.
    fn judge(&mut self) {
        let Some(w) = &mut self.watch else { return };
        let now = Instant::now();
        let idle = now.saturating_duration_since(w.last_output);
        if idle >= w.cfg.idle {
            w.idle_judged = true;
        }
        w.unjudged = false;
        let cfg = w.cfg;
        if w.deferred.is_some_and(|at| at <= now) {
            w.deferred = None;
        }
        let text = self.screen.with(|s| s.contents());
        let found = detect(&text, idle, &cfg).filter(|d| d.score >= cfg.threshold);
        if let Some((prompt, screen)) = &w.open {
            let same = found.as_ref().is_some_and(|d| same_prompt(&d.prompt, prompt));
            if same || text == *screen {
                return;
            }
            // Answered at a terminal, or the agent moved on: the request is moot.
            self.recorder.send(Record::CloseHitl { why: "the prompt left the screen" });
            w.open = None;
        }
        let Some(d) = found else { return };
        if w.asked_on.as_ref() == Some(&text) {
            return;
        }
        // A person attached and typing is answering it themselves: no request, no notice. Asked
        // again once they stop typing for the idle time, or leave.
        let attached = self.clients.values().any(|c| c.attached && !c.read_only);
        if let Some(typed) =
            self.last_typed.filter(|t| attached && now.saturating_duration_since(*t) < cfg.idle)
        {
            w.deferred = Some(typed + cfg.idle);
            return;
        }
        w.asked_on = Some(text.clone());
        w.open = Some((d.prompt.clone(), text.clone()));
        self.recorder.send(Record::OpenHitl { kind: d.kind, score: d.score, prompt: d.prompt, screen: text });
        // The terminal bell: `grid` panes and attached terminals flag the agent.
        let bell = Frame::Output(b"\x07".to_vec()).encode();
        for c in self.clients.values_mut().filter(|c| c.attached) {
            c.out.extend_from_slice(&bell);
        }
    }

    /// After the sandbox ended: record everything, tell attached clients, flush them briefly.
    fn finish(mut self, status: WaitStatus) -> i32 {
        while self.read_master() {}
        let code = match status {
            WaitStatus::Exited(_, c) => c,
            WaitStatus::Signaled(_, s, _) => 128 + s as i32,
            _ => 255,
        };
        let state = if self.killed { AgentState::Killed } else { AgentState::Exited };
        // The last output is written before the end is recorded, when the disk has room again.
        let was_blocked = self.log.blocked();
        while self.log.flush().unwrap_or(false) {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        self.note_disk(was_blocked, false);
        self.screen.finish();
        let (text, ansi) = self.screen.with(|s| (s.contents(), s.contents_formatted()));
        let _ = std::fs::write(paths::screen_text(&self.state_dir), text);
        let _ = std::fs::write(paths::screen_ansi(&self.state_dir), ansi);
        // Recorded (and people told) before attached clients hear the exit, so whatever they do
        // next sees the agent ended.
        self.recorder.send(Record::Finished { state, code });
        let recorder = std::mem::replace(&mut self.recorder, Recorder::none());
        recorder.finish();
        let exit = Frame::Exit(code).encode();
        for c in self.clients.values_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(std::time::Duration::from_secs(2)));
            c.out.extend_from_slice(&exit);
            let _ = c.stream.write_all(c.out.pending());
        }
        let _ = std::fs::remove_file(paths::socket(&self.state_dir));
        code
    }
}

/// Whether the other end of a client connection has closed it (called once what it sent was
/// read: a peek then finds the end of the stream).
fn peer_gone(stream: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    matches!(recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Ok(0))
}

/// Refuses to start an agent whose supervisor already answers on its socket: a socket a live
/// supervisor answers on is never taken, so two supervisors for one agent are refused, not made
/// (checked before the sandbox is launched; the per-agent lock keeps two starts from racing to
/// the bind).
fn no_other_supervisor(path: &Path) -> Result<(), SupervisorError> {
    match UnixStream::connect(path) {
        Ok(_) => Err(SupervisorError::Start(format!(
            "another supervisor answers on {}; this agent is already running",
            path.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// Binds the agent's socket (owner-only), replacing a stale one.
fn bind_socket(path: &Path) -> Result<UnixListener, SupervisorError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| SupervisorError::Socket(path.to_path_buf(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| SupervisorError::Socket(path.to_path_buf(), e))?;
    listener.set_nonblocking(true).map_err(|e| SupervisorError::Socket(path.to_path_buf(), e))?;
    Ok(listener)
}

/// How long the agent's terminal stays quiet after it showed a one-shot input's text before
/// its Enter is typed.
const HOLD_ENTER: std::time::Duration = std::time::Duration::from_millis(80);

/// The longest an Enter waits after its text: for an agent that shows nothing, or never stops
/// drawing (a spinner).
const HOLD_ENTER_MAX: std::time::Duration = std::time::Duration::from_millis(1500);

/// The second line `ready` receives after `error: ...` when the command itself cannot run.
pub const INVALID_COMMAND: &str = "invalid-command";

/// Tells the waiting caller why the agent did not start (its `error:` line), as the error.
fn not_ready(msg: String, ready: &mut dyn Write) -> SupervisorError {
    let _ = writeln!(ready, "error: {msg}");
    SupervisorError::Start(msg)
}

/// Runs the agent until it ends. `ready` receives one line once the command runs inside the
/// sandbox (`ok`) or why it could not start (`error: ...`). Returns the agent's exit status.
pub fn supervise(
    mut cfg: SupervisorConfig,
    store: AgentStore,
    ready: &mut dyn Write,
) -> Result<i32, SupervisorError> {
    let meanwhile = cfg.meanwhile.take();
    let fail = |store: &Store, msg: String, ready: &mut dyn Write| {
        let _ = store.mark_finished(&cfg.name, Some(cfg.generation), AgentState::Failed, None, &msg);
        not_ready(msg, ready)
    };
    let not_started = |store: &Store, e: agentbox_jail::JailError, ready: &mut dyn Write| {
        // A command that cannot run is the caller's to fix; say so, for the API's status code.
        let err = fail(store, e.to_string(), ready);
        if matches!(e, agentbox_jail::JailError::Exec { .. }) {
            let _ = writeln!(ready, "{INVALID_COMMAND}");
        }
        err
    };
    // Before the launch the store may not be open yet: a failure opens it to be recorded.
    let refuse =
        |store: AgentStore, e: Result<String, agentbox_jail::JailError>, ready: &mut dyn Write| match (
            store.open(),
            e,
        ) {
            (Ok(store), Ok(msg)) => fail(&store, msg, ready),
            (Ok(store), Err(e)) => not_started(&store, e, ready),
            (Err(why), e) => {
                let msg = e.unwrap_or_else(|e| e.to_string());
                not_ready(
                    format!("{msg} (and the store, which would record it, cannot be opened: {why})"),
                    ready,
                )
            }
        };
    let socket = paths::socket(&cfg.state_dir);
    if let Err(e) = no_other_supervisor(&socket) {
        return Err(refuse(store, Ok(e.to_string()), ready));
    }
    let (plan, report) = match (cfg.spec.backend, &cfg.vm) {
        (agentbox_core::Backend::Ns, _) => (build_plan(&cfg.spec, &RealFs), None),
        (agentbox_core::Backend::Vm, Some(assets)) => match crate::vm_plan(&cfg.spec, assets) {
            Ok(planned) => planned,
            Err(msg) => return Err(refuse(store, Ok(msg), ready)),
        },
        (agentbox_core::Backend::Vm, None) => {
            let msg = "the VM backend was asked for without a guest image".to_string();
            return Err(refuse(store, Ok(msg), ready));
        }
    };
    let launched = match launch(&plan, Stdio::Pty { size: Some(DEFAULT_SIZE), termios: None }, true) {
        Ok(launched) => launched,
        Err(e) => return Err(refuse(store, Err(e), ready)),
    };
    // Not fatal: unheard, a failed restore is only tried again by the next VM.
    let _ = report.map(crate::RestoreReport::listen);
    // Made between the sandbox's launch and the wait for it: nothing here needs the sandbox, and
    // its child sets itself up meanwhile wherever the scheduler gives it a CPU. Clients connect
    // only after `ok`, and the agent's first output waits in its terminal.
    let store = match store.open() {
        Ok(store) => store,
        Err(why) => {
            drop(launched);
            return Err(not_ready(format!("cannot open the store: {why}"), ready));
        }
    };
    if let Some(work) = meanwhile {
        (work.0)(&store);
    }
    // On failure the sandbox is killed before the caller hears of it: a spawn then removes the
    // agent's directory, which must not be in use by a sandbox still mounting it.
    let give_up = |launched: Launched<'_>, msg: String, ready: &mut dyn Write| {
        drop(launched);
        fail(&store, msg, ready)
    };
    let log = match LogFile::open(
        &paths::log(&cfg.state_dir),
        cfg.log_limit,
        (DEFAULT_SIZE.rows, DEFAULT_SIZE.cols),
    ) {
        Ok(log) => log,
        Err(e) => return Err(give_up(launched, format!("cannot open the log: {e}"), ready)),
    };
    let listener = match bind_socket(&socket) {
        Ok(l) => l,
        Err(e) => return Err(give_up(launched, e.to_string(), ready)),
    };
    let mut running = launched.finish().map_err(|e| not_started(&store, e, ready))?;
    let Some(master) = running.master.take() else {
        return Err(fail(&store, "the sandbox has no terminal".into(), ready));
    };
    nonblocking(&master).map_err(|e| fail(&store, format!("terminal: {e}"), ready))?;
    let proxy = match (running.proxy_listener.take(), cfg.proxy.take()) {
        (Some(listener), Some(setup)) => (setup.0)()
            .and_then(|c| agentbox_proxy::start(listener, c).map_err(|e| e.to_string()))
            .map(Some)
            .map_err(|e| format!("cannot start the egress proxy: {e}")),
        (Some(_), None) => Err("proxy mode without a proxy configuration".to_string()),
        _ => Ok(None),
    };
    let proxy = match proxy {
        Ok(p) => p,
        Err(msg) => {
            let _ = kill(running.pid, Signal::SIGKILL);
            let _ = waitpid(running.pid, None);
            return Err(fail(&store, msg, ready));
        }
    };
    if let Err(e) = store.mark_running(
        &cfg.name,
        cfg.generation,
        i64::from(std::process::id()),
        i64::from(running.pid.as_raw()),
    ) {
        // Killed, removed or started again meanwhile: this start is not the agent's any more.
        let _ = kill(running.pid, Signal::SIGKILL);
        let _ = waitpid(running.pid, None);
        let _ = writeln!(ready, "error: {e}");
        return Err(e.into());
    }
    let _ = writeln!(ready, "ok");
    let _ = ready.flush();

    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| SupervisorError::Sys("block signals", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| SupervisorError::Sys("signalfd", e))?;

    let mut session = Session {
        state_dir: cfg.state_dir.clone(),
        recorder: Recorder::start(store, cfg.name.clone(), cfg.generation, cfg.notify.take()),
        sandbox: running.pid,
        master,
        log,
        screen: Screen::new(DEFAULT_SIZE),
        clients: HashMap::new(),
        next_id: 0,
        pending_input: Vec::new(),
        held: None,
        last_output: Instant::now(),
        last_typed: None,
        killed: false,
        tree: agentbox_jail::SandboxTree {
            root: running.pid,
            pid_ns: running.handles.as_ref().and_then(|h| {
                let fd = h.namespace(nix::sched::CloneFlags::CLONE_NEWPID)?;
                nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
            }),
        },
        handles: running.handles.take(),
        idle: IdlePause::new(
            crate::idle::Agent {
                name: cfg.name.clone(),
                generation: cfg.generation,
                store_path: cfg.store_path.clone(),
                lock_path: cfg.lock_path.clone(),
                vm: cfg.spec.backend == agentbox_core::Backend::Vm,
            },
            cfg.spec.pause_after,
        ),
        proxy,
        watch: cfg.hitl.map(|cfg| Watch {
            cfg,
            last_output: Instant::now(),
            unjudged: false,
            idle_judged: false,
            asked_on: None,
            open: None,
            deferred: None,
        }),
        read_buf: vec![0u8; 65536],
    };
    // `running` keeps the sandbox's cgroup until the supervisor is done with it.
    let _cgroup = running;

    loop {
        let attached_before = session.clients.values().filter(|c| c.attached && !c.read_only).count();
        let ids: Vec<u64> = session.clients.keys().copied().collect();
        let (status, master_ev, listen_ev, client_ev) = {
            let mut fds = vec![
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(session.master.as_fd(), {
                    // While the log waits for disk space the terminal is not read: the agent
                    // waits at its next write instead of losing output.
                    let read = if session.log.blocked() { PollFlags::empty() } else { PollFlags::POLLIN };
                    if session.pending_input.is_empty() {
                        read
                    } else {
                        read | PollFlags::POLLOUT
                    }
                }),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            ];
            for id in &ids {
                let c = &session.clients[id];
                let mut ev = PollFlags::POLLIN;
                if !c.out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), ev));
            }
            // The next thing due: the HITL watch's look at the screen, held keys (an Enter after
            // its text), a pause for idleness (or a resume for input), and, while the log waits
            // for disk space, another look twice a second.
            let now = Instant::now();
            let blocked = session.log.blocked().then(|| now + std::time::Duration::from_millis(500));
            let due = [
                session.watch.as_ref().and_then(Watch::due),
                session.held_due(),
                session.idle.due(),
                blocked,
            ];
            let timeout = match due.into_iter().flatten().min() {
                None => PollTimeout::NONE,
                Some(at) => {
                    PollTimeout::from(at.saturating_duration_since(now).as_millis().min(60_000) as u16)
                }
            };
            match poll(&mut fds, timeout) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SupervisorError::Sys("poll", e)),
                Ok(_) => {}
            }
            let ev = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
            (ev(0), ev(1), ev(2), (3..fds.len()).map(ev).collect::<Vec<_>>())
        };

        if session.log.blocked() {
            session.retry_log();
        }
        if !session.log.blocked()
            && master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        {
            session.read_master();
        }
        if master_ev.contains(PollFlags::POLLOUT) {
            session.write_input();
        }
        if listen_ev.contains(PollFlags::POLLIN) {
            while let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    session.next_id += 1;
                    let client = Client {
                        stream,
                        decoder: Decoder::default(),
                        out: Outbox::default(),
                        attached: false,
                        read_only: false,
                        closing: false,
                    };
                    session.clients.insert(session.next_id, client);
                }
            }
        }
        for (id, ev) in ids.iter().zip(client_ev) {
            if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                session.read_client(*id);
            }
            if session.clients.contains_key(id) {
                session.flush_client(*id);
            }
        }
        if !session.pending_input.is_empty() {
            session.write_input();
        }
        session.release_held();
        // A person left: a prompt they were answering is judged again now.
        if session.clients.values().filter(|c| c.attached && !c.read_only).count() < attached_before {
            if let Some(w) = &mut session.watch {
                w.deferred = Some(Instant::now());
            }
        }
        if !session.pending_input.is_empty() {
            session.write_input();
        }
        if session.watch.as_ref().and_then(Watch::due).is_some_and(|at| at <= Instant::now()) {
            session.judge();
        }
        let tree = session.tree;
        session.idle.tick(tree);
        if !status.is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo as i32 != Signal::SIGCHLD as i32 {
                    // `kill` of the supervisor itself kills the agent.
                    session.killed = true;
                    let _ = kill(session.sandbox, Signal::SIGKILL);
                    agentbox_jail::thaw_for_kill(session.sandbox);
                }
            }
            match waitpid(session.sandbox, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => {}
                Ok(st) => return Ok(session.finish(st)),
            }
        }
    }
}
