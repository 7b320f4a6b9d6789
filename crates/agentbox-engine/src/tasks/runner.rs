//! The task runner: `agentbox __tasks`, detached, at most one per AGENTBOX_HOME.
//!
//! Its loop adopts tasks that are in progress without a driver (left by a runner that died) and
//! starts pending ones, oldest first, while fewer than `[tasks] max_concurrent` run. Each task is
//! driven by a thread of its own through staging (the clone, in a sandbox, by a child process),
//! provisioning (the agent, spawned by a child process: no sandbox is cloned from this threaded
//! process), running (timeout and cancel watched), and completing (artifacts collected). Every
//! move is a conditional update in the store, so a cancel or a second runner can never be
//! overwritten. The runner exits once nothing is left to do; whoever submits starts it again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::err;
use crate::error::{Context, Result};
use agentbox_core::{
    format_duration, EgressRequest, EnvArg, HostRule, MountArg, SpawnSpec, TaskManifest, TaskState,
    WorkspaceSource,
};
use agentbox_store::{now_ms, Store, TaskChange, TaskRecord};
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;

use super::{agent_name, artifacts, task_dir, tasks_dir};
use crate::config::Config;
use crate::config::{DEFAULT_MAX_TASKS, DEFAULT_RUNNER_LINGER};
use crate::home::{private_dir, Home};
use crate::notify::Notifier;
use crate::Error;

/// How often the runner and its drivers look at the store and their children. A look is one
/// indexed SQLite read; at 50 ms a task's steps follow each other without visible lag.
const TICK: Duration = Duration::from_millis(50);

fn lock_path(home: &Home) -> std::path::PathBuf {
    tasks_dir(home).join("runner.lock")
}

fn try_lock(home: &Home) -> Result<Option<Flock<File>>> {
    private_dir(&tasks_dir(home))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path(home))
        .context("opening the runner lock")?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(err!("locking the runner lock: {e}")),
    }
}

/// The pid of the live runner, if one holds the lock. Read from /proc/locks, never by taking
/// the lock: a look that held it even for an instant would make a submit at that instant think
/// a runner is there to start its task.
pub fn runner_pid(home: &Home) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(lock_path(home)).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| holder_of(line, meta.dev(), meta.ino()))
}

/// The holder of one /proc/locks line if it is a flock on the file (`dev`, `ino`):
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`.
fn holder_of(line: &str, dev: u64, ino: u64) -> Option<i32> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(1) != Some(&"FLOCK") || f.get(4).is_none() {
        return None;
    }
    let (pid, id) = (f[4].parse::<i32>().ok()?, f.get(5)?);
    let mut parts = id.split(':');
    let major = u64::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    let same = nix::sys::stat::major(dev) == major && nix::sys::stat::minor(dev) == minor && inode == ino;
    (same && pid > 0).then_some(pid)
}

/// Starts a runner unless one is running.
pub fn ensure_running(home: &Home) -> Result<()> {
    match try_lock(home)? {
        None => Ok(()),
        Some(lock) => {
            drop(lock);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(tasks_dir(home).join("runner.log"))
                .context("opening runner.log")?;
            crate::home::self_command()
                .arg("__tasks")
                .env("AGENTBOX_HOME", &home.root)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting the task runner")?;
            Ok(())
        }
    }
}

/// The `__tasks` role.
pub fn runner_role() -> Result<i32> {
    let _ = nix::unistd::setsid();
    let home = Home::open()?;
    let Some(mut lock) = try_lock(&home)? else { return Ok(0) };
    lock.set_len(0)?;
    writeln!(lock, "{}", std::process::id())?;
    let store = home.store()?;
    let mut drivers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut idle_since = Instant::now();
    let linger = Config::load(&home).and_then(|c| c.tasks.linger()).unwrap_or(DEFAULT_RUNNER_LINGER);
    loop {
        drivers.retain(|_, h| !h.is_finished());
        let tasks = store.tasks()?;
        for t in tasks.iter().filter(|t| t.state != TaskState::Pending && !t.state.is_final()) {
            if !drivers.contains_key(&t.id) {
                drivers.insert(t.id.clone(), drive(&home, &t.id, true));
            }
        }
        let pending: Vec<&str> =
            tasks.iter().filter(|t| t.state == TaskState::Pending).map(|t| t.id.as_str()).collect();
        // The limit is read when there is something to start (the file may have changed).
        let max = match pending.first() {
            Some(_) => Config::load(&home).map(|c| c.tasks.max_concurrent()).unwrap_or(DEFAULT_MAX_TASKS),
            None => 0,
        };
        for id in to_start(&pending, |id| drivers.contains_key(id), drivers.len(), max) {
            drivers.insert(id.to_string(), drive(&home, id, false));
        }
        if drivers.is_empty() {
            if idle_since.elapsed() >= linger {
                // Let go first, then look: a submit that found the lock held counts on this
                // runner, and its task is in the store before it looked, so this look sees it.
                // Leaving without the lock means no submit can count on a runner that is going.
                drop(lock);
                if !store.tasks()?.iter().any(|t| !t.state.is_final()) {
                    return Ok(0);
                }
                // Work came: stay, unless another runner (or a submit about to start one)
                // took the lock meanwhile; then it is theirs.
                match try_lock(&home)? {
                    Some(again) => {
                        lock = again;
                        lock.set_len(0)?;
                        writeln!(lock, "{}", std::process::id())?;
                        idle_since = Instant::now();
                        continue;
                    }
                    None => return Ok(0),
                }
            }
        } else {
            idle_since = Instant::now();
        }
        std::thread::sleep(TICK);
    }
}

/// The pending tasks to start now, oldest first: those without a driver, while fewer than `max`
/// run. A driver started at an earlier tick may not have moved its task out of pending yet (a
/// loaded machine): a second one would stage the task again under the first.
fn to_start<'t>(
    pending: &[&'t str],
    driven: impl Fn(&str) -> bool,
    running: usize,
    max: usize,
) -> Vec<&'t str> {
    let free = max.saturating_sub(running);
    pending.iter().copied().filter(|id| !driven(id)).take(free).collect()
}

fn drive(home: &Home, id: &str, resumed: bool) -> JoinHandle<()> {
    let (home, id) = (home.clone(), id.to_string());
    std::thread::spawn(move || {
        let mut d = match Driver::new(&home, &id) {
            Ok(d) => d,
            Err(e) => {
                // A task that cannot even be read (a damaged manifest) fails, or the loop would
                // adopt it again at every tick.
                eprintln!("agentbox: task {id}: {e}");
                if let Ok(store) = home.store() {
                    if let Ok(t) = store.task(&id) {
                        let _ = store.move_task(
                            &id,
                            t.state,
                            TaskState::Failed,
                            &format!("{e}"),
                            &TaskChange::default(),
                        );
                    }
                }
                return;
            }
        };
        if let Err(e) = d.run(resumed) {
            // Whatever went wrong, the task does not stay in limbo.
            let reason = format!("{e}");
            eprintln!("agentbox: task {id}: {reason}");
            if let Ok(t) = d.store.task(&id) {
                if !t.state.is_final() {
                    let _ = d.finish(t.state, TaskState::Failed, &reason, None);
                }
            }
        }
    })
}

/// Why a step stopped early.
enum Stop {
    Cancelled,
    /// Failed, and recorded so.
    Failed,
}

struct Driver {
    home: Home,
    store: Store,
    id: String,
    m: TaskManifest,
    notifier: Notifier,
}

impl Driver {
    fn new(home: &Home, id: &str) -> Result<Self> {
        let store = home.store()?;
        let t = store.task(id)?;
        let m: TaskManifest = serde_json::from_str(&t.manifest).context("decoding the stored manifest")?;
        let notifier =
            Notifier::new(&Config::load(home).map(|c| c.notify).unwrap_or_default()).unwrap_or_default();
        Ok(Self { home: home.clone(), store, id: id.to_string(), m, notifier })
    }

    fn task(&self) -> Result<TaskRecord> {
        Ok(self.store.task(&self.id)?)
    }

    fn dir(&self) -> std::path::PathBuf {
        task_dir(&self.home, &self.id)
    }

    fn cancelled(&self) -> bool {
        self.task().map(|t| t.cancel_requested).unwrap_or(false)
    }

    fn step(&self, from: TaskState, to: TaskState, reason: &str, change: &TaskChange<'_>) -> Result<()> {
        if !self.store.move_task(&self.id, from, to, reason, change)? {
            let now = self.task()?;
            crate::bail!("the task left {from} (it is {}); leaving it", now.state);
        }
        Ok(())
    }

    /// Moves to a final state and tells people.
    fn finish(&self, from: TaskState, to: TaskState, reason: &str, exit_code: Option<i64>) -> Result<()> {
        let change = TaskChange { exit_code, ..Default::default() };
        if self.store.move_task(&self.id, from, to, reason, &change)? {
            let t = self.task()?;
            self.notifier.send(
                "task.finished",
                &format!("task {} {to}", t.name),
                reason,
                json!({"task": self.id, "name": t.name, "state": to, "reason": reason,
                       "agent": t.agent, "exit_code": exit_code}),
            );
            self.notifier.finish(Duration::from_secs(20));
        }
        Ok(())
    }

    fn run(&mut self, resumed: bool) -> Result<()> {
        let mut state = self.task()?.state;
        if resumed {
            self.store.record(&self.id, "task-resumed", &format!("a new runner took it over in {state}"))?;
        }
        loop {
            if state.is_final() {
                return Ok(());
            }
            if self.cancelled() {
                return self.cancel(state);
            }
            let next = match state {
                TaskState::Pending => {
                    self.step(
                        TaskState::Pending,
                        TaskState::Staging,
                        "preparing the workspace",
                        &TaskChange::default(),
                    )?;
                    TaskState::Staging
                }
                TaskState::Staging => match self.stage()? {
                    Ok(()) => TaskState::Provisioning,
                    Err(Stop::Cancelled) => return self.cancel(TaskState::Staging),
                    Err(Stop::Failed) => return Ok(()),
                },
                TaskState::Provisioning => self.provision()?,
                TaskState::Running => self.watch()?,
                TaskState::Completing => self.complete()?,
                TaskState::Completed | TaskState::Failed | TaskState::Cancelled => return Ok(()),
            };
            state = next;
            if state.is_final() {
                return Ok(());
            }
        }
    }

    fn cancel(&self, from: TaskState) -> Result<()> {
        let t = self.task()?;
        if let Some(agent) = &t.agent {
            if let Ok(rec) = crate::lifecycle::kill(&self.home, &self.store, agent) {
                self.keep_log(&rec.name, t.attempt);
            }
        }
        self.finish(from, TaskState::Cancelled, "cancelled on request", None)
    }

    /// Waits for a child, killing it if the task is cancelled meanwhile.
    fn wait_child(&self, mut child: Child) -> Result<std::result::Result<(bool, String), Stop>> {
        loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Ok(Ok((status.success(), err)));
            }
            if self.cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Err(Stop::Cancelled));
            }
            std::thread::sleep(TICK);
        }
    }

    /// Staging: the task's directories, its input, and the repository clone.
    fn stage(&self) -> Result<std::result::Result<(), Stop>> {
        let dir = self.dir();
        let ws = dir.join("workspace");
        // A staging interrupted half-way starts over.
        if ws.exists() {
            crate::tree::remove_tree(&ws)?;
        }
        // The agent writes its workspace and output; it reads its input (read-only inside).
        for sub in ["output", "workspace"] {
            crate::tree::agent_dir(&dir.join(sub))?;
        }
        readable_dir(&dir.join("input"))?;
        if let Some(p) = &self.m.agent.prompt {
            readable_file(&dir.join("input/prompt.md"), p.as_bytes()).context("writing the prompt")?;
        }
        let manifest = std::fs::read(dir.join("manifest.json")).context("reading the manifest")?;
        readable_file(&dir.join("input/manifest.json"), &manifest).context("copying the manifest")?;
        if let Some(repo) = &self.m.repository {
            let mut cmd = crate::home::self_command();
            cmd.arg("__clone").arg(&repo.url).arg(&ws);
            if let Some(r) = repo.git_ref.as_ref().or(repo.branch.as_ref()) {
                cmd.arg("--ref").arg(r);
            }
            let child = cmd
                .env("AGENTBOX_HOME", &self.home.root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting the clone")?;
            match self.wait_child(child)? {
                Err(stop) => return Ok(Err(stop)),
                Ok((true, _)) => {}
                Ok((false, err)) => {
                    let reason =
                        format!("cloning {}: {}", repo.url, err.trim().trim_start_matches("agentbox: "));
                    self.finish(TaskState::Staging, TaskState::Failed, &reason, None)?;
                    return Ok(Err(Stop::Failed));
                }
            }
            if let Some(sub) = &repo.subdir {
                if !ws.join(sub).is_dir() {
                    let reason = format!("repository.subdir '{sub}' is not a directory of the repository");
                    self.finish(TaskState::Staging, TaskState::Failed, &reason, None)?;
                    return Ok(Err(Stop::Failed));
                }
            }
        }
        let what = match &self.m.repository {
            Some(r) => format!("cloned {}", r.url),
            None => "workspace ready".to_string(),
        };
        self.step(TaskState::Staging, TaskState::Provisioning, &what, &TaskChange::default())?;
        Ok(Ok(()))
    }

    fn request(&self) -> Result<SpawnSpec> {
        let dir = self.dir();
        let a = &self.m.agent;
        let mut command = a.command.clone();
        if command.is_empty() && (a.model.is_some() || !a.args.is_empty()) {
            if let Some(p) = &a.profile {
                command = crate::profiles::load(&self.home, p)?.command;
            }
        }
        if let Some(model) = &a.model {
            command.extend(["--model".to_string(), model.clone()]);
        }
        command.extend(a.args.iter().cloned());
        let mut env: Vec<EnvArg> =
            self.m.env.iter().map(|(k, v)| EnvArg::Set(k.clone(), v.clone())).collect();
        env.push(EnvArg::Set("AGENTBOX_TASK_ID".into(), self.id.clone()));
        env.push(EnvArg::Set("AGENTBOX_TASK_INPUT".into(), "/task/input".into()));
        env.push(EnvArg::Set("AGENTBOX_TASK_OUTPUT".into(), "/task/output".into()));
        let allow = self
            .m
            .allow
            .iter()
            .map(|a| a.parse::<HostRule>().map_err(|e| Error::invalid(format!("allow: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(SpawnSpec {
            name: agent_name(&self.id),
            profile: a.profile.clone(),
            command: command.into_iter().map(Into::into).collect(),
            prompt: a.prompt.clone().map(String::into_bytes),
            tags: vec![("task".to_string(), self.id.clone())],
            workspace: WorkspaceSource::HostDir { dir: dir.join("workspace") },
            network: self.m.network,
            egress: EgressRequest { allow, ..Default::default() },
            env,
            limits: self.m.limits,
            backend: Some(self.m.backend),
            volumes: vec![
                MountArg { source: dir.join("input"), target: Some("/task/input".into()), writable: false },
                MountArg { source: dir.join("output"), target: Some("/task/output".into()), writable: true },
            ],
            workdir: self.m.repository.as_ref().and_then(|r| r.subdir.clone()).map(Into::into),
            ..Default::default()
        })
    }

    /// Saves the agent's log as `attempt-N.log` in the task's directory.
    fn keep_log(&self, agent: &str, attempt: i64) {
        if let Ok(rec) = self.store.get(agent) {
            let log = agentbox_supervisor::paths::log(&crate::agents::state_dir(&rec));
            let _ = std::fs::copy(log, self.dir().join(format!("attempt-{attempt}.log")));
        }
    }

    /// Provisioning: the agent of the next attempt (or the one a previous runner started).
    fn provision(&self) -> Result<TaskState> {
        let t = self.task()?;
        let name = agent_name(&self.id);
        if let Ok(rec) = self.store.get(&name) {
            let rec = crate::agents::reconcile(&self.store, rec)?;
            if t.attempt > 0 && crate::agents::is_live_state(&rec.state) {
                // Started by a runner that died before it recorded so.
                let change = TaskChange { started: true, ..Default::default() };
                self.step(TaskState::Provisioning, TaskState::Running, "the agent runs (adopted)", &change)?;
                return Ok(TaskState::Running);
            }
            crate::lifecycle::remove(&self.home, &self.store, &name, true)?;
        }
        let attempt = t.attempt + 1;
        let req = self.request()?;
        match crate::spawn::spawn_in_child(&self.home, &req) {
            Ok(_) => {
                let change = TaskChange {
                    agent: Some(&name),
                    attempt: Some(attempt),
                    started: true,
                    ..Default::default()
                };
                let what = if attempt == 1 {
                    "the agent runs".to_string()
                } else {
                    format!("attempt {attempt} runs")
                };
                self.step(TaskState::Provisioning, TaskState::Running, &what, &change)?;
                Ok(TaskState::Running)
            }
            Err(e) => {
                self.finish(
                    TaskState::Provisioning,
                    TaskState::Failed,
                    &format!("the agent could not start: {e}"),
                    None,
                )?;
                Ok(TaskState::Failed)
            }
        }
    }

    /// Running: until the agent ends, the timeout passes, or a cancel.
    fn watch(&self) -> Result<TaskState> {
        let t = self.task()?;
        let agent = t.agent.clone().unwrap_or_else(|| agent_name(&self.id));
        let deadline = self.m.timeout_secs.map(|s| t.started_at.unwrap_or_else(now_ms) + (s as i64) * 1000);
        loop {
            if self.cancelled() {
                self.cancel(TaskState::Running)?;
                return Ok(TaskState::Cancelled);
            }
            let rec = match self.store.get(&agent) {
                Ok(r) => r,
                Err(_) => {
                    self.finish(
                        TaskState::Running,
                        TaskState::Failed,
                        &format!("its agent {agent} was removed"),
                        None,
                    )?;
                    return Ok(TaskState::Failed);
                }
            };
            // A supervisor that died without recording the end counts as ended, and is recorded
            // so (the next attempt must not adopt it as running).
            let rec = crate::agents::reconcile(&self.store, rec)?;
            if !crate::agents::is_live_state(&rec.state) {
                return self.ended(&t, &rec);
            }
            if let Some(d) = deadline {
                if now_ms() >= d {
                    let rec = crate::lifecycle::kill(&self.home, &self.store, &agent)?;
                    self.keep_log(&agent, t.attempt);
                    let limit = format_duration(Duration::from_secs(self.m.timeout_secs.unwrap_or(0)));
                    self.collect().ok();
                    self.finish(
                        TaskState::Running,
                        TaskState::Failed,
                        &format!("timed out after {limit}; the agent was killed"),
                        rec.exit_code,
                    )?;
                    return Ok(TaskState::Failed);
                }
            }
            std::thread::sleep(TICK);
        }
    }

    fn ended(&self, t: &TaskRecord, rec: &agentbox_store::AgentRecord) -> Result<TaskState> {
        self.keep_log(&rec.name, t.attempt);
        let code = rec.exit_code;
        if rec.state == agentbox_core::AgentState::Exited && code == Some(0) {
            self.step(
                TaskState::Running,
                TaskState::Completing,
                "the agent exited 0; collecting artifacts",
                &TaskChange { exit_code: code, ..Default::default() },
            )?;
            return Ok(TaskState::Completing);
        }
        let how = match (rec.state.as_str(), code) {
            ("exited", Some(c)) => format!("the agent exited with code {c}"),
            (s, _) => format!("the agent {s}"),
        };
        if t.attempt <= i64::from(self.m.retries) {
            let reason = format!("{how}; retrying (attempt {} of {})", t.attempt + 1, self.m.retries + 1);
            self.step(
                TaskState::Running,
                TaskState::Provisioning,
                &reason,
                &TaskChange { exit_code: code, ..Default::default() },
            )?;
            return Ok(TaskState::Provisioning);
        }
        self.collect().ok();
        self.finish(TaskState::Running, TaskState::Failed, &how, code)?;
        Ok(TaskState::Failed)
    }

    fn collect(&self) -> Result<(usize, Vec<String>)> {
        let dir = self.dir();
        artifacts::collect(&dir.join("workspace"), &dir.join("output"), &self.m.artifacts)
    }

    /// Completing: artifacts into the output directory.
    fn complete(&self) -> Result<TaskState> {
        let t = self.task()?;
        let (copied, missing) = match self.collect() {
            Ok(r) => r,
            Err(e) => {
                self.finish(
                    TaskState::Completing,
                    TaskState::Failed,
                    &format!("collecting artifacts: {e}"),
                    t.exit_code,
                )?;
                return Ok(TaskState::Failed);
            }
        };
        let total = artifacts::list(&self.dir().join("output")).map(|l| l.len()).unwrap_or(copied);
        let mut reason = format!("{total} artifact(s)");
        if !missing.is_empty() {
            reason.push_str(&format!("; not collected: {}", missing.join(", ")));
        }
        self.finish(TaskState::Completing, TaskState::Completed, &reason, t.exit_code)?;
        Ok(TaskState::Completed)
    }
}

/// The `__clone URL DIR [--ref REF]` role: a clone in a sandbox, from a single-threaded process.
pub fn clone_role(url: &str, dir: &Path, git_ref: Option<&str>) -> Result<i32> {
    crate::git::check_url(url)?;
    crate::git::clone(url, git_ref, dir)?;
    Ok(0)
}

/// A directory the agent may read but not change (0755; bound read-only inside).
fn readable_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("securing {}", dir.display()))
}

/// A file the agent may read (0644), written afresh.
fn readable_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Today's bug under load: a task still pending at the next tick, its driver already
    /// started, got a second driver, which staged it again (its workspace removed under the
    /// first) and the task failed.
    #[test]
    fn a_pending_task_with_a_driver_is_not_started_twice() {
        let driven = |id: &str| id == "a";
        assert_eq!(to_start(&["a", "b", "c"], driven, 1, 2), ["b"]);
        assert_eq!(to_start(&["a", "b", "c"], driven, 1, 8), ["b", "c"]);
        assert!(to_start(&["a"], driven, 1, 8).is_empty());
        assert!(to_start(&["b"], |_| false, 2, 2).is_empty());
    }

    #[test]
    fn a_flock_line_names_its_holder_only_for_the_same_file() {
        let dev = nix::sys::stat::makedev(8, 1);
        let line = "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF";
        assert_eq!(holder_of(line, dev, 5678), Some(1234));
        assert_eq!(holder_of(line, dev, 5679), None);
        assert_eq!(holder_of(line, nix::sys::stat::makedev(8, 2), 5678), None);
        assert_eq!(holder_of("2: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF", dev, 5678), None);
        assert_eq!(holder_of("1: -> FLOCK  ADVISORY  WRITE 99 08:01:5678 0 EOF", dev, 5678), None);
    }

    #[test]
    fn looking_for_the_runner_never_holds_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home")).unwrap();
        assert_eq!(runner_pid(&home), None);
        let held = try_lock(&home).unwrap().expect("the lock is free");
        assert_eq!(runner_pid(&home), Some(std::process::id() as i32));
        drop(held);
        // A submit checks for a runner by taking the lock; a look running at the same moment
        // (the dashboard asks for the runner's pid) must never make that check fail.
        let looks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let looker = {
            let (home, looks) = (home.clone(), looks.clone());
            std::thread::spawn(move || {
                while looks.load(std::sync::atomic::Ordering::Relaxed) < 20_000 {
                    let _ = runner_pid(&home);
                    looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        while looks.load(std::sync::atomic::Ordering::Relaxed) < 20_000 {
            assert!(try_lock(&home).unwrap().is_some(), "a look at the runner held its lock");
        }
        looker.join().unwrap();
    }
}
