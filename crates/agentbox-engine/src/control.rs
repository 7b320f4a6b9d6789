//! What a front end can ask of agentbox, wherever the agents are: this machine ([`Local`], the
//! engine itself) or a server (the CLI's HTTP client implements the same trait). The CLI renders
//! the values this returns, one renderer for both, so `agentbox --server URL list` prints what
//! `agentbox list` prints on the server's machine.

use std::path::Path;

use agentbox_core::{HostRule, ManifestFormat, SpawnSpec};
use agentbox_proxy::AuditRecord;
use agentbox_store::Event;

use crate::error::Result;
use crate::home::Home;
use crate::tasks::artifacts::{self, Artifact};
use crate::tasks::{TaskDetail, TaskView};
use crate::views::{AgentView, Filter, HitlView, LogBytes, ScreenView};
use crate::workspace::apply::{Applied, ApplyRequest};
use crate::workspace::changes::Change;
use crate::workspace::checkpoint::Checkpoint;

/// The operations both the local engine and a server offer.
pub trait Control {
    fn list(&self, filter: &Filter) -> Result<Vec<AgentView>>;
    fn get(&self, name: &str) -> Result<AgentView>;
    fn spawn(&self, spec: &SpawnSpec) -> Result<AgentView>;
    fn kill(&self, name: &str) -> Result<AgentView>;
    /// SIGTERM, `grace` to end, then kill.
    fn stop(&self, name: &str, grace: std::time::Duration) -> Result<AgentView>;
    /// Stops every process of a running agent's sandbox (see [`crate::pause`]).
    fn pause(&self, name: &str) -> Result<AgentView>;
    /// Pauses the agent whenever it has been idle `after` (`None`: never); see
    /// [`crate::pause::when_idle`].
    fn pause_when_idle(&self, name: &str, after: Option<std::time::Duration>) -> Result<AgentView>;
    /// The tar stream of `path` in the agent's sandbox (`cp` out; see [`crate::cp`]).
    fn archive_get(&self, name: &str, path: &Path, out: &mut dyn std::io::Write) -> Result<u64>;
    /// Unpacks a tar stream in the agent's sandbox at `path` (`cp` in): into that directory, or
    /// with `top`, its one entry landing as `path` when that is not a directory.
    fn archive_put(
        &self,
        name: &str,
        path: &Path,
        top: Option<&std::ffi::OsStr>,
        input: &mut dyn std::io::Read,
    ) -> Result<u64>;
    /// What the agent changed in its workspace (see [`crate::diff::changes`]).
    fn changes(&self, name: &str) -> Result<Vec<Change>>;
    /// The agent's changes written back (see [`crate::workspace::apply`]).
    fn apply(&self, name: &str, req: &ApplyRequest) -> Result<Applied>;
    fn apply_undo(&self, name: &str, force: bool) -> Result<Applied>;
    /// A `--from-git` agent's work as a patch, or as a branch (see
    /// [`crate::workspace::gitapply`]).
    fn git_patch(&self, name: &str) -> Result<Vec<u8>>;
    fn git_branch(
        &self,
        name: &str,
        req: &crate::workspace::gitapply::BranchRequest,
    ) -> Result<crate::workspace::gitapply::BranchMade>;
    /// Checkpoints (see [`crate::workspace::checkpoint`]).
    fn checkpoint(&self, name: &str, message: &str) -> Result<Checkpoint>;
    fn checkpoints(&self, name: &str) -> Result<Vec<Checkpoint>>;
    fn checkpoint_remove(&self, name: &str, id: &str) -> Result<()>;
    fn rollback(&self, name: &str, id: &str) -> Result<AgentView>;
    /// A new agent from `name` (see [`crate::lifecycle::fork`]).
    fn fork(&self, name: &str, new: &str, at: Option<&str>, stopped: bool) -> Result<AgentView>;
    /// Named volumes (see [`crate::volumes`]).
    fn volumes(&self) -> Result<Vec<crate::volumes::VolumeView>>;
    fn volume_create(&self, name: &str) -> Result<crate::volumes::VolumeView>;
    fn volume_remove(&self, name: &str) -> Result<()>;
    fn resume(&self, name: &str) -> Result<AgentView>;
    fn restart(&self, name: &str) -> Result<AgentView>;
    fn remove(&self, name: &str, force: bool) -> Result<()>;
    /// Removes every stopped agent and what crashes left behind; what it removed.
    fn clean(&self) -> Result<Vec<String>>;
    /// Types bytes into a running agent's terminal.
    fn send(&self, name: &str, bytes: &[u8]) -> Result<()>;
    fn screen(&self, name: &str, ansi: bool) -> Result<ScreenView>;
    /// A byte range of the agent's log (see [`crate::logs::log_range_at`]).
    fn log_range(&self, name: &str, offset: Option<u64>, raw: bool) -> Result<LogBytes>;
    /// Where the agent's output written at or after `ms` (Unix milliseconds) starts in its log.
    fn log_offset(&self, name: &str, ms: u64) -> Result<u64>;
    /// The log's last `lines` lines (as bytes, or as its screen showed them), and where the log
    /// ends (for a follower to go on from).
    fn log_tail(&self, name: &str, lines: usize, raw: bool) -> Result<(Vec<u8>, u64)>;
    /// The agent's last `limit` audit records, oldest first.
    fn net_records(&self, name: &str, limit: usize) -> Result<Vec<AuditRecord>>;
    fn allow(&self, name: &str, host: &HostRule, once: bool, always: bool) -> Result<()>;
    /// Takes `host` off the agent's allowlist (and the config's with `always`).
    fn revoke(&self, name: &str, host: &HostRule, always: bool) -> Result<()>;
    /// The journal's last `limit` entries (of one kind), oldest first.
    fn events(&self, limit: usize, kind: Option<&str>) -> Result<Vec<Event>>;
    /// HITL requests, newest first: open ones, or all.
    fn hitl_list(&self, all: bool) -> Result<Vec<HitlView>>;
    fn answer_hitl(&self, id: i64, text: &str, enter: bool) -> Result<HitlView>;
    fn tasks(&self) -> Result<Vec<TaskView>>;
    fn task(&self, id: &str) -> Result<TaskDetail>;
    /// The task alone (what a follower polls; [`Control::task`] also reads its artifacts).
    fn task_view(&self, id: &str) -> Result<TaskView>;
    /// Submits a manifest as written (YAML or JSON); it is validated where it runs.
    fn submit_task(&self, text: &str, format: ManifestFormat) -> Result<TaskView>;
    fn cancel_task(&self, id: &str) -> Result<TaskView>;
    /// The current attempt's log as plain text.
    fn task_log(&self, id: &str) -> Result<String>;
    /// Copies a task's artifacts into `dest` (created); returns what was copied.
    fn download_artifacts(&self, id: &str, dest: &Path) -> Result<Vec<Artifact>>;
}

/// The agents of this machine's `AGENTBOX_HOME`. Spawning clones a sandbox, so [`Control::spawn`]
/// must be called from a single-threaded process (the CLI is one).
#[derive(Debug)]
pub struct Local {
    pub home: Home,
    store: agentbox_store::Store,
}

impl Local {
    /// This machine's `AGENTBOX_HOME`.
    pub fn open() -> Result<Self> {
        Self::at(Home::open()?)
    }

    pub fn at(home: Home) -> Result<Self> {
        let store = home.store()?;
        Ok(Self { home, store })
    }

    pub fn store(&self) -> &agentbox_store::Store {
        &self.store
    }
}

impl Control for Local {
    fn list(&self, filter: &Filter) -> Result<Vec<AgentView>> {
        crate::views::list(&self.store, filter)
    }

    fn get(&self, name: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::agents::get(&self.store, name)?))
    }

    fn spawn(&self, spec: &SpawnSpec) -> Result<AgentView> {
        crate::spawn::spawn_one(&self.home, spec)?;
        self.get(&spec.name)
    }

    fn kill(&self, name: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::lifecycle::kill(&self.home, &self.store, name)?))
    }

    fn stop(&self, name: &str, grace: std::time::Duration) -> Result<AgentView> {
        Ok(AgentView::of(&crate::lifecycle::stop(&self.home, &self.store, name, grace)?))
    }

    fn restart(&self, name: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::lifecycle::restart(&self.home, &self.store, name)?))
    }

    fn pause(&self, name: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::pause::pause(&self.home, &self.store, name)?))
    }

    fn pause_when_idle(&self, name: &str, after: Option<std::time::Duration>) -> Result<AgentView> {
        Ok(AgentView::of(&crate::pause::when_idle(&self.home, &self.store, name, after)?))
    }

    fn volumes(&self) -> Result<Vec<crate::volumes::VolumeView>> {
        crate::volumes::list(&self.home, &self.store)
    }

    fn changes(&self, name: &str) -> Result<Vec<Change>> {
        crate::diff::changes_of(&self.store, name)
    }

    fn apply(&self, name: &str, req: &ApplyRequest) -> Result<Applied> {
        crate::workspace::apply::apply(&self.home, &self.store, name, req)
    }

    fn apply_undo(&self, name: &str, force: bool) -> Result<Applied> {
        crate::workspace::apply::undo(&self.home, &self.store, name, force)
    }

    fn git_patch(&self, name: &str) -> Result<Vec<u8>> {
        crate::workspace::gitapply::patch(&self.home, name)
    }

    fn git_branch(
        &self,
        name: &str,
        req: &crate::workspace::gitapply::BranchRequest,
    ) -> Result<crate::workspace::gitapply::BranchMade> {
        crate::workspace::gitapply::branch(&self.home, name, &req.branch, req.to.as_deref(), req.force)
    }

    fn checkpoint(&self, name: &str, message: &str) -> Result<Checkpoint> {
        crate::workspace::checkpoint::create(&self.home, &self.store, name, message)
    }

    fn checkpoints(&self, name: &str) -> Result<Vec<Checkpoint>> {
        crate::workspace::checkpoint::list(&self.store, name)
    }

    fn checkpoint_remove(&self, name: &str, id: &str) -> Result<()> {
        crate::workspace::checkpoint::remove(&self.home, &self.store, name, id)
    }

    fn rollback(&self, name: &str, id: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::workspace::checkpoint::rollback(&self.home, &self.store, name, id)?))
    }

    fn fork(&self, name: &str, new: &str, at: Option<&str>, stopped: bool) -> Result<AgentView> {
        Ok(AgentView::of(&crate::lifecycle::fork(&self.home, &self.store, name, new, at, stopped)?))
    }

    fn archive_get(&self, name: &str, path: &Path, out: &mut dyn std::io::Write) -> Result<u64> {
        crate::cp::archive_out(&self.home, name, path, out)
    }

    fn archive_put(
        &self,
        name: &str,
        path: &Path,
        top: Option<&std::ffi::OsStr>,
        input: &mut dyn std::io::Read,
    ) -> Result<u64> {
        crate::cp::archive_in(&self.home, name, path, top, input)
    }

    fn volume_create(&self, name: &str) -> Result<crate::volumes::VolumeView> {
        crate::volumes::create(&self.home, name)
    }

    fn volume_remove(&self, name: &str) -> Result<()> {
        crate::volumes::remove(&self.home, &self.store, name)
    }

    fn resume(&self, name: &str) -> Result<AgentView> {
        Ok(AgentView::of(&crate::pause::resume(&self.home, &self.store, name)?))
    }

    fn remove(&self, name: &str, force: bool) -> Result<()> {
        crate::lifecycle::remove(&self.home, &self.store, name, force)
    }

    fn clean(&self) -> Result<Vec<String>> {
        crate::lifecycle::clean(&self.home, &self.store)
    }

    fn send(&self, name: &str, bytes: &[u8]) -> Result<()> {
        crate::session::send(&self.store, name, bytes)
    }

    fn screen(&self, name: &str, ansi: bool) -> Result<ScreenView> {
        let (rec, screen) = crate::session::screen(&self.store, name, ansi)?;
        Ok(ScreenView { name: rec.name, state: rec.state.to_string(), screen })
    }

    fn log_range(&self, name: &str, offset: Option<u64>, raw: bool) -> Result<LogBytes> {
        crate::logs::read_range(&self.store, name, offset, raw)
    }

    fn log_offset(&self, name: &str, ms: u64) -> Result<u64> {
        crate::logs::agent_offset_at(&self.store, name, ms)
    }

    fn log_tail(&self, name: &str, lines: usize, raw: bool) -> Result<(Vec<u8>, u64)> {
        let path = agentbox_supervisor::paths::log(&crate::agents::state_dir(&crate::agents::get(
            &self.store,
            name,
        )?));
        let end = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let tail = match raw {
            true => crate::logs::tail_at(&path, lines, true)?,
            false => crate::logs::render_tail_at(&path, lines)?,
        };
        Ok((tail, end))
    }

    fn net_records(&self, name: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        crate::net::net_records(&self.store, name, limit)
    }

    fn allow(&self, name: &str, host: &HostRule, once: bool, always: bool) -> Result<()> {
        crate::net::allow(&self.home, &self.store, name, host, once, always)
    }

    fn revoke(&self, name: &str, host: &HostRule, always: bool) -> Result<()> {
        crate::net::revoke(&self.home, &self.store, name, host, always)
    }

    fn events(&self, limit: usize, kind: Option<&str>) -> Result<Vec<Event>> {
        Ok(self.store.events(limit, kind)?)
    }

    fn hitl_list(&self, all: bool) -> Result<Vec<HitlView>> {
        Ok(self.store.hitl_list(!all, 500)?.iter().map(HitlView::of).collect())
    }

    fn answer_hitl(&self, id: i64, text: &str, enter: bool) -> Result<HitlView> {
        Ok(HitlView::of(&crate::session::answer_hitl(&self.store, id, text, enter)?))
    }

    fn tasks(&self) -> Result<Vec<TaskView>> {
        crate::tasks::list(&self.home, &self.store)
    }

    fn task(&self, id: &str) -> Result<TaskDetail> {
        crate::tasks::detail(&self.home, &self.store, id)
    }

    fn task_view(&self, id: &str) -> Result<TaskView> {
        crate::tasks::get(&self.home, &self.store, id)
    }

    fn submit_task(&self, text: &str, format: ManifestFormat) -> Result<TaskView> {
        let manifest = crate::tasks::parse_manifest(text, format)?;
        crate::tasks::submit(&self.home, &self.store, &manifest)
    }

    fn cancel_task(&self, id: &str) -> Result<TaskView> {
        crate::tasks::cancel(&self.home, &self.store, id)
    }

    fn task_log(&self, id: &str) -> Result<String> {
        let t = crate::tasks::get(&self.home, &self.store, id)?;
        Ok(match crate::tasks::log_path(&self.home, &self.store, &t) {
            Some(p) => {
                let bytes = std::fs::read(&p).unwrap_or_default();
                String::from_utf8_lossy(&crate::logs::plain(&bytes)).into_owned()
            }
            None => String::new(),
        })
    }

    fn download_artifacts(&self, id: &str, dest: &Path) -> Result<Vec<Artifact>> {
        let t = crate::tasks::get(&self.home, &self.store, id)?;
        artifacts::download(Path::new(&t.output_dir), dest)
    }
}
