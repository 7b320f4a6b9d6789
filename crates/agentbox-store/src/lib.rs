//! agentbox's state: one SQLite file (WAL mode) shared by the CLI, every agent's supervisor and
//! later the server, all writing at once.
//!
//! Holds agents (their resolved spec as JSON, state and exit status), tags, and the event journal
//! (spawn, start, exit, kill, rm, ...). No business logic: callers decide what a transition means.
//! Concurrency: WAL lets readers proceed during a write; writers wait up to `BUSY_TIMEOUT` for the
//! lock instead of failing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentbox_core::AgentState;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

mod changes;
mod hitl;
mod tasks;

pub use changes::{ChangeWatch, Stamp};
pub use hitl::HitlRecord;
pub use tasks::{TaskChange, TaskRecord};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("agent '{0}' already exists; pick another name or remove it with `agentbox rm {0}`")]
    Exists(String),
    #[error("no agent named '{0}' (see `agentbox list`)")]
    NotFound(String),
    #[error("no task '{0}' (see `agentbox task list`)")]
    NoTask(String),
    #[error("more than one task id starts with '{0}'; give more of it")]
    AmbiguousTask(String),
    #[error("no open request #{0} (see `agentbox hitl list`)")]
    NoHitl(i64),
    /// A move from a state the row is not in (someone else moved it first, or the move is not
    /// one the state allows).
    #[error("{what} is {now}; it cannot become {to}")]
    WrongState { what: String, now: String, to: String },
    /// A write of a supervisor whose start is no longer the agent's current one.
    #[error("agent '{name}' was started again since (start {generation} is current)")]
    Superseded { name: String, generation: i64 },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("watching the state database for changes: {0}")]
    Watch(std::io::Error),
    #[error("locking the state database to set it up: {0}")]
    Lock(std::io::Error),
    #[error(
        "the state database {path} is damaged ({detail}); `agentbox store check` says how, \
         `agentbox store recover` rebuilds it from the agents' directories and keeps this file aside"
    )]
    Corrupt { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A state enum of `agentbox-core` as a TEXT column: its name.
pub(crate) struct Col<T>(pub T);

impl<T: std::str::FromStr<Err = String>> FromSql for Col<T> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = v.as_str()?;
        text.parse::<T>().map(Col).map_err(|e| FromSqlError::Other(e.into()))
    }
}

/// `?` placeholders for an `IN (...)` list of states, and their names.
pub(crate) fn state_list<T: Copy + std::fmt::Display>(states: &[T]) -> String {
    states.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

impl<T: Copy + std::fmt::Display> ToSql for Col<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.to_string()))
    }
}

/// The schema, one step per release that changed it; never edit a step that shipped.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            spec TEXT NOT NULL,
            state_dir TEXT NOT NULL,
            supervisor_pid INTEGER,
            sandbox_pid INTEGER,
            exit_code INTEGER,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER
        );
        CREATE TABLE tags (
            agent TEXT NOT NULL REFERENCES agents(name) ON DELETE CASCADE ON UPDATE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (agent, key)
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            agent TEXT NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX events_agent ON events(agent);",
    "ALTER TABLE agents ADD COLUMN profile TEXT; ALTER TABLE agents ADD COLUMN prompt BLOB;",
    "CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            manifest TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            agent TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            exit_code INTEGER
        );
        CREATE TABLE hitl (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent TEXT NOT NULL,
            state TEXT NOT NULL,
            kind TEXT NOT NULL,
            score REAL NOT NULL,
            prompt TEXT NOT NULL,
            screen TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            closed_at INTEGER,
            answer TEXT
        );
        CREATE UNIQUE INDEX hitl_one_open ON hitl(agent) WHERE state = 'open';
        ALTER TABLE agents ADD COLUMN restart TEXT;",
    // Who may write an agent's row: the spawn that claimed its name (`owner`, while it is
    // `creating`), then the supervisor of its current start (`generation`).
    "ALTER TABLE agents ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agents ADD COLUMN owner TEXT;",
];

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// Holds `PATH.lock` exclusively while a store is set up.
fn setup_lock(db: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .map_err(StoreError::Lock)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| StoreError::Lock(std::io::Error::from(e)))
}

/// Whether `db` lives on a file system mounted read-only.
fn on_read_only_fs(db: &Path) -> bool {
    let dir = db.parent().unwrap_or(Path::new("/"));
    nix::sys::statvfs::statvfs(dir).is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// An open that fails because the file is not a sound database says so, with the way out.
fn damaged(path: &Path, e: StoreError) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match &e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, detail))
            if matches!(f.code, NotADatabase | DatabaseCorrupt) =>
        {
            StoreError::Corrupt {
                path: path.display().to_string(),
                detail: detail.clone().unwrap_or_else(|| f.to_string()),
            }
        }
        _ => e,
    }
}

impl StoreError {
    fn code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            StoreError::Sql(e) => e.sqlite_error_code(),
            _ => None,
        }
    }

    /// The store is on a read-only file system (or its file is read-only).
    pub fn is_read_only(&self) -> bool {
        self.code() == Some(rusqlite::ErrorCode::ReadOnly)
    }

    /// The disk is full.
    pub fn is_full(&self) -> bool {
        self.code() == Some(rusqlite::ErrorCode::DiskFull)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One agent as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    pub name: String,
    pub state: AgentState,
    /// The resolved sandbox spec, JSON.
    pub spec: String,
    pub state_dir: String,
    pub supervisor_pid: Option<i64>,
    pub sandbox_pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub tags: Vec<(String, String)>,
    /// The profile it was spawned with.
    pub profile: Option<String>,
    /// The prompt typed once it ran (replayed by `restart`).
    #[serde(skip)]
    pub prompt: Option<Vec<u8>>,
    /// Restart policy: `on-failure:N` (see the supervisor role), or none.
    pub restart: Option<String>,
    /// Which start of the agent this is: each start adds one, and a supervisor's writes count
    /// only while its generation is the current one.
    pub generation: i64,
    /// While `creating`: the process that claimed the name (`PID:START`, see the engine).
    pub owner: Option<String>,
}

/// What `create_agent` records about a new agent.
#[derive(Debug, Clone, Default)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub spec_json: &'a str,
    pub state_dir: &'a str,
    pub tags: &'a [(String, String)],
    pub profile: Option<&'a str>,
    pub prompt: Option<&'a [u8]>,
    /// `starting` (spawn) unless given; `created` for an agent that is not started (clone).
    pub state: Option<AgentState>,
    pub restart: Option<&'a str>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub agent: String,
    pub event: String,
    pub detail: String,
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event { id: r.get(0)?, at: r.get(1)?, agent: r.get(2)?, event: r.get(3)?, detail: r.get(4)? })
}

#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// Store connections open in this process.
static OPEN_CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many store connections this process has open. A child forked while one is open must not
/// open its own: SQLite keeps per-process lock state beside each open file, and a forked child
/// would inherit the parent's as if it held the parent's locks.
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(std::sync::atomic::Ordering::SeqCst)
}

impl Drop for Store {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

const AGENT_COLUMNS: &str =
    "name, state, spec, state_dir, supervisor_pid, sandbox_pid, exit_code, created_at, started_at, finished_at, profile, prompt, restart, generation, owner";

fn agent_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        name: row.get(0)?,
        state: row.get::<_, Col<AgentState>>(1)?.0,
        spec: row.get(2)?,
        state_dir: row.get(3)?,
        supervisor_pid: row.get(4)?,
        sandbox_pid: row.get(5)?,
        exit_code: row.get(6)?,
        created_at: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
        tags: Vec::new(),
        profile: row.get(10)?,
        prompt: row.get(11)?,
        restart: row.get(12)?,
        generation: row.get(13)?,
        owner: row.get(14)?,
    })
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `path`.
    ///
    /// A new or older database is set up under an exclusive lock (`PATH.lock`): processes that
    /// open a fresh store at one instant would otherwise all create its tables, and all but one
    /// fail. One that is up to date takes no lock.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_inner(path).map_err(|e| damaged(path, e))
    }

    fn counted(conn: Connection) -> Self {
        OPEN_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self { conn }
    }

    fn open_inner(path: &Path) -> Result<Self> {
        if on_read_only_fs(path) {
            return Self::open_immutable(path);
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < MIGRATIONS.len() as i64 {
            let _lock = setup_lock(path)?;
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            migrations().to_latest(&mut conn)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self::counted(conn))
    }

    /// A store on a read-only file system: read as it is; every write fails with
    /// [`StoreError::is_read_only`]. With its WAL files there (another process still has it open)
    /// it is read through them; without, the main file holds everything and is read as immutable.
    fn open_immutable(path: &Path) -> Result<Self> {
        use rusqlite::OpenFlags;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let conn = if wal.exists() {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
        } else {
            let uri = format!("file:{}?immutable=1", path.display());
            Connection::open_with_flags(uri, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?
        };
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != MIGRATIONS.len() as i64 {
            return Err(StoreError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the store needs setting up, and its file system is read-only".into()),
            )));
        }
        Ok(Self::counted(conn))
    }

    /// Makes this connection's close leave the write-ahead log as it is. The last connection to
    /// close otherwise checkpoints the log into the database and deletes it (two fsyncs), and the
    /// next write makes a new one (two more). For a connection another
    /// opens right after (a spawn's, closed before it forks the agent's supervisor, which opens
    /// its own): the log is checkpointed when that one closes, or once it outgrows SQLite's
    /// limit. What was committed is in the log and is read from it; only its move into the
    /// database waits.
    pub fn leave_log_on_close(&self) -> Result<()> {
        self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        Ok(())
    }

    /// SQLite's own check of the file (`PRAGMA integrity_check`): the problems it finds, none
    /// when the file is sound.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    /// Claims `name` for a new agent made by `owner` (state `creating`), before anything is made
    /// on disk: of two spawns of one name, exactly one gets it.
    pub fn claim(&self, name: &str, state_dir: &str, owner: &str) -> Result<()> {
        let inserted = self.conn.execute(
            "INSERT INTO agents (name, state, spec, state_dir, created_at, owner)
             VALUES (?1, 'creating', '{}', ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
            params![name, state_dir, now_ms(), owner],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Gives up a claim `owner` made (its spawn failed, or its process died): only a row still
    /// `creating` under that owner is removed. Whether one was.
    pub fn release_claim(&self, name: &str, owner: &str) -> Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM agents WHERE name = ?1 AND state = 'creating' AND owner = ?2",
            params![name, owner],
        )?;
        Ok(n > 0)
    }

    /// Fills in the agent `owner` claimed: its spec, tags and settings; it becomes `starting`
    /// (generation 1), or `a.state`. A spawn is journaled.
    pub fn fill_claim(&self, a: &NewAgent<'_>, owner: &str) -> Result<()> {
        let (name, tags) = (a.name, a.tags);
        let state = a.state.unwrap_or(AgentState::Starting);
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE agents SET state = ?2, spec = ?3, state_dir = ?4, created_at = ?5, profile = ?6,
                 prompt = ?7, restart = ?8, owner = NULL,
                 generation = CASE WHEN ?2 = 'starting' THEN 1 ELSE 0 END
             WHERE name = ?1 AND state = 'creating' AND owner = ?9",
            params![
                name,
                Col(state),
                a.spec_json,
                a.state_dir,
                now_ms(),
                a.profile,
                a.prompt,
                a.restart,
                owner
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        for (k, v) in tags {
            tx.execute(
                "INSERT OR REPLACE INTO tags (agent, key, value) VALUES (?1, ?2, ?3)",
                params![name, k, v],
            )?;
        }
        // A spawn is journaled here; other creations (clone) journal themselves.
        if a.state.is_none() {
            tx.execute(
                "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, 'spawn', '')",
                params![now_ms(), name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// [`Store::claim`] and [`Store::fill_claim`] at once (when nothing is made in between).
    pub fn create_agent(&mut self, a: &NewAgent<'_>) -> Result<()> {
        let owner = format!("create:{}", std::process::id());
        self.claim(a.name, a.state_dir, &owner)?;
        self.fill_claim(a, &owner)
    }

    fn tags_of(&self, name: &str) -> Result<Vec<(String, String)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT key, value FROM tags WHERE agent = ?1 ORDER BY key")?;
        let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get(&self, name: &str) -> Result<AgentRecord> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1");
        let mut agent = self
            .conn
            .query_row(&sql, [name], agent_from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        agent.tags = self.tags_of(name)?;
        Ok(agent)
    }

    /// All agents, oldest first.
    pub fn list(&self) -> Result<Vec<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at, name");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut agents: Vec<AgentRecord> =
            stmt.query_map([], agent_from_row)?.collect::<rusqlite::Result<_>>()?;
        for a in &mut agents {
            a.tags = self.tags_of(&a.name)?;
        }
        Ok(agents)
    }

    /// Moves `name` to `to` if it is in one of the states `to` may follow, with `set` (more
    /// assignments, `?3`.. are `extra`) and the journal entry `event: detail`, in one transaction.
    /// Fails with [`StoreError::WrongState`] (and changes nothing) otherwise.
    /// With `generation`, only the row of that start moves (a supervisor's writes).
    #[allow(clippy::too_many_arguments)]
    fn move_agent(
        &self,
        name: &str,
        to: AgentState,
        generation: Option<i64>,
        set: &str,
        extra: &[&dyn ToSql],
        event: &str,
        detail: &str,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let of_generation = match generation {
            Some(g) => format!(" AND generation = {g}"),
            None => String::new(),
        };
        let sql = format!(
            "UPDATE agents SET state = ?2{set} WHERE name = ?1 AND state IN ({}){of_generation}",
            state_list(to.allowed_from())
        );
        let col = Col(to);
        let mut args: Vec<&dyn ToSql> = vec![&name, &col];
        args.extend_from_slice(extra);
        let n = tx.execute(&sql, args.as_slice())?;
        if n == 0 {
            let now: Option<(String, i64)> = tx
                .query_row("SELECT state, generation FROM agents WHERE name = ?1", [name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            return Err(match now {
                None => StoreError::NotFound(name.to_string()),
                Some((_, now)) if generation.is_some_and(|g| g != now) => {
                    StoreError::Superseded { name: name.to_string(), generation: now }
                }
                Some((now, _)) => {
                    StoreError::WrongState { what: format!("agent '{name}'"), now, to: to.to_string() }
                }
            });
        }
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), name, event, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The sandbox of start `generation` is running under `supervisor_pid` (only a `starting`
    /// agent can be).
    pub fn mark_running(
        &self,
        name: &str,
        generation: i64,
        supervisor_pid: i64,
        sandbox_pid: i64,
    ) -> Result<()> {
        let now = now_ms();
        self.move_agent(
            name,
            AgentState::Running,
            Some(generation),
            ", supervisor_pid = ?3, sandbox_pid = ?4, started_at = ?5, exit_code = NULL, finished_at = NULL",
            &[&supervisor_pid, &sandbox_pid, &now],
            "start",
            &format!("supervisor {supervisor_pid}, sandbox {sandbox_pid}"),
        )
    }

    /// Start `generation` of a running agent was paused (`paused`), or a paused one resumed.
    pub fn mark_paused(&self, name: &str, generation: i64, paused: bool, detail: &str) -> Result<()> {
        let (to, event) = match paused {
            true => (AgentState::Paused, "pause"),
            false => (AgentState::Running, "resume"),
        };
        self.move_agent(name, to, Some(generation), "", &[], event, detail)
    }

    /// A stopped agent is being started again (never one that may still run): a new generation,
    /// which it returns.
    pub fn mark_starting(&self, name: &str, event: &str) -> Result<i64> {
        let now = now_ms();
        self.move_agent(
            name,
            AgentState::Starting,
            None,
            ", supervisor_pid = NULL, sandbox_pid = NULL, exit_code = NULL, finished_at = NULL, \
             generation = generation + 1, \
             created_at = CASE WHEN state = 'created' THEN ?3 ELSE created_at END",
            &[&now],
            event,
            "",
        )?;
        Ok(self.conn.query_row("SELECT generation FROM agents WHERE name = ?1", [name], |r| r.get(0))?)
    }

    /// Replaces an agent's spec (e.g. a host allowed while it runs, kept for its restarts).
    pub fn set_spec(&self, name: &str, spec_json: &str) -> Result<()> {
        let n = self.conn.execute("UPDATE agents SET spec = ?2 WHERE name = ?1", params![name, spec_json])?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Renames an agent (tags follow), with its spec and state directory updated by the caller.
    pub fn rename(&mut self, old: &str, new: &str, spec_json: &str, state_dir: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        if tx.query_row("SELECT 1 FROM agents WHERE name = ?1", [new], |_| Ok(())).optional()?.is_some() {
            return Err(StoreError::Exists(new.to_string()));
        }
        let n = tx.execute(
            "UPDATE agents SET name = ?2, spec = ?3, state_dir = ?4 WHERE name = ?1",
            params![old, new, spec_json, state_dir],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(old.to_string()));
        }
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, 'rename', ?3)",
            params![now_ms(), new, format!("from {old}")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The agent ended: `state` is `exited`, `killed`, `failed` or `crashloop`; only a live agent
    /// ends (and only an ended one is put in `crashloop`). With `generation`, only if that start
    /// is still the current one (a supervisor's write).
    pub fn mark_finished(
        &self,
        name: &str,
        generation: Option<i64>,
        state: AgentState,
        exit_code: Option<i64>,
        detail: &str,
    ) -> Result<()> {
        let now = now_ms();
        self.move_agent(
            name,
            state,
            generation,
            ", exit_code = ?3, finished_at = ?4",
            &[&exit_code, &now],
            state.event(),
            detail,
        )
    }

    /// Removes the agent and its tags (the journal keeps its history) and records `rm`.
    pub fn delete(&self, name: &str) -> Result<()> {
        let n = self.conn.execute("DELETE FROM agents WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        self.record(name, "rm", "")
    }

    pub fn record(&self, agent: &str, event: &str, detail: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), agent, event, detail],
        )?;
        Ok(())
    }

    /// Replaces an agent's tags with `tags` and journals the change.
    pub fn set_tags(&mut self, name: &str, tags: &[(String, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        if tx.query_row("SELECT 1 FROM agents WHERE name = ?1", [name], |_| Ok(())).optional()?.is_none() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        tx.execute("DELETE FROM tags WHERE agent = ?1", [name])?;
        for (k, v) in tags {
            tx.execute("INSERT INTO tags (agent, key, value) VALUES (?1, ?2, ?3)", params![name, k, v])?;
        }
        let text: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, 'tags', ?3)",
            params![now_ms(), name, text.join(",")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Events with an id greater than `after`, oldest first, at most `limit` (for streaming).
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, agent, event, detail FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many `event` entries about `subject` were journaled at or after `since` (ms).
    pub fn count_events_since(&self, subject: &str, event: &str, since: i64) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM events WHERE agent = ?1 AND event = ?2 AND at >= ?3",
            params![subject, event, since],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// How many journal entries of each kind there are (the totals behind the server's counters).
    pub fn event_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached("SELECT event, COUNT(*) FROM events GROUP BY event")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `limit` events (optionally of one kind), oldest first.
    pub fn events(&self, limit: usize, event: Option<&str>) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, agent, event, detail FROM
               (SELECT * FROM events WHERE (?1 IS NULL OR event = ?1) ORDER BY id DESC LIMIT ?2)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![event, limit as i64], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn tags_replace_and_events_stream() {
        let (_d, mut s) = store();
        let new = NewAgent { name: "t1", spec_json: "{}", state_dir: "/x", ..Default::default() };
        s.create_agent(&new).unwrap();
        s.set_tags("t1", &[("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        s.set_tags("t1", &[("b".into(), "3".into())]).unwrap();
        assert_eq!(s.get("t1").unwrap().tags, vec![("b".to_string(), "3".to_string())]);
        assert!(matches!(s.set_tags("nope", &[]), Err(StoreError::NotFound(_))));
        let all = s.events_after(0, 100).unwrap();
        assert_eq!(all.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["spawn", "tags", "tags"]);
        let later = s.events_after(all[0].id, 1).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].detail, "a=1,b=2");
        let counts = s.event_counts().unwrap();
        assert!(counts.contains(&("tags".to_string(), 2)));
        assert_eq!(s.count_events_since("t1", "tags", 0).unwrap(), 2);
        assert_eq!(s.count_events_since("t1", "tags", now_ms() + 60_000).unwrap(), 0);
        assert_eq!(s.count_events_since("other", "tags", 0).unwrap(), 0);
    }

    #[test]
    fn lifecycle_and_journal() {
        let (_d, mut s) = store();
        let tags = [("team".to_string(), "red".to_string())];
        let new = NewAgent {
            name: "a1",
            spec_json: "{}",
            state_dir: "/x/a1",
            tags: &tags,
            profile: Some("codex"),
            prompt: Some(b"hi"),
            state: None,
            restart: None,
        };
        s.create_agent(&new).unwrap();
        assert!(matches!(s.create_agent(&new), Err(StoreError::Exists(_))));
        assert_eq!(s.get("a1").unwrap().profile.as_deref(), Some("codex"));
        assert_eq!(s.get("a1").unwrap().prompt.as_deref(), Some(&b"hi"[..]));
        assert_eq!(s.get("a1").unwrap().state, AgentState::Starting);
        // A start that is not `starting -> running` is refused, and nothing changes.
        assert!(matches!(s.mark_starting("a1", "restart"), Err(StoreError::WrongState { .. })));
        assert_eq!(s.get("a1").unwrap().generation, 1);
        s.mark_running("a1", 1, 10, 11).unwrap();
        let a = s.get("a1").unwrap();
        assert_eq!((a.state, a.supervisor_pid, a.tags.len()), (AgentState::Running, Some(10), 1));
        assert!(matches!(s.mark_running("a1", 1, 12, 13), Err(StoreError::WrongState { .. })));
        s.mark_finished("a1", Some(1), AgentState::Exited, Some(3), "exit code 3").unwrap();
        assert_eq!(s.get("a1").unwrap().exit_code, Some(3));
        let e = s.mark_finished("a1", None, AgentState::Killed, None, "").unwrap_err();
        assert_eq!(e.to_string(), "agent 'a1' is exited; it cannot become killed");
        assert_eq!(s.mark_starting("a1", "restart").unwrap(), 2);
        assert_eq!(s.get("a1").unwrap().exit_code, None);
        // The first start's supervisor writes no more: the second start is current.
        assert!(matches!(s.mark_running("a1", 1, 10, 11), Err(StoreError::Superseded { generation: 2, .. })));
        assert!(matches!(
            s.mark_finished("a1", Some(1), AgentState::Exited, Some(137), ""),
            Err(StoreError::Superseded { .. })
        ));
        s.mark_finished("a1", Some(2), AgentState::Exited, Some(0), "").unwrap();
        let b = NewAgent {
            name: "b",
            spec_json: "{}",
            state_dir: "/x/b",
            state: Some(AgentState::Created),
            ..Default::default()
        };
        s.create_agent(&b).unwrap();
        assert_eq!(s.get("b").unwrap().state, AgentState::Created);
        assert!(matches!(s.rename("a1", "b", "{}", "/x/b"), Err(StoreError::Exists(_))));
        s.rename("a1", "a2", "{\"n\":2}", "/x/a2").unwrap();
        let a2 = s.get("a2").unwrap();
        assert_eq!((a2.spec.as_str(), a2.state_dir.as_str(), a2.tags.len()), ("{\"n\":2}", "/x/a2", 1));
        s.rename("a2", "a1", "{}", "/x/a1").unwrap();
        s.delete("a1").unwrap();
        assert!(matches!(s.get("a1"), Err(StoreError::NotFound(_))));
        let ev: Vec<String> = s.events(10, None).unwrap().into_iter().map(|e| e.event).collect();
        assert_eq!(ev, ["spawn", "start", "exit", "restart", "exit", "rename", "rename", "rm"]);
        assert_eq!(s.events(10, Some("exit")).unwrap().len(), 2);
        assert_eq!(s.events(2, None).unwrap().len(), 2);
    }

    /// The last connection's close moves the log into the database and deletes it; with
    /// `leave_log_on_close` the log stays, and the next connection reads what it holds.
    #[test]
    fn a_connection_can_leave_the_log_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let wal = dir.path().join("state.db-wal");
        let mut s = Store::open(&path).unwrap();
        let new = NewAgent { name: "a1", spec_json: "{}", state_dir: "/x", ..Default::default() };
        s.create_agent(&new).unwrap();
        drop(s);
        assert!(!wal.exists(), "the last close checkpoints and deletes the log");
        let mut s = Store::open(&path).unwrap();
        let new = NewAgent { name: "a2", spec_json: "{}", state_dir: "/x", ..Default::default() };
        s.create_agent(&new).unwrap();
        s.leave_log_on_close().unwrap();
        drop(s);
        assert!(std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0), "the log was not left");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(s.check().unwrap().is_empty());
        drop(s);
        assert!(!wal.exists(), "a connection that does not ask leaves no log");
    }

    #[test]
    fn concurrent_writers_wait_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // They all open the fresh store at one instant: one sets it up, the others wait for it.
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut s = Store::open(&path).unwrap();
                    for i in 0..25 {
                        let name = format!("a{t}-{i}");
                        let new =
                            NewAgent { name: &name, spec_json: "{}", state_dir: "/x", ..Default::default() };
                        s.create_agent(&new).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().list().unwrap().len(), 100);
    }

    /// A name is claimed once; the claim is released only by its owner, and filled only by it.
    #[test]
    fn claims_are_exclusive_and_owned() {
        let (_d, s) = store();
        s.claim("c", "/x/c", "me").unwrap();
        assert!(matches!(s.claim("c", "/x/c", "you"), Err(StoreError::Exists(_))));
        assert_eq!(s.get("c").unwrap().state, AgentState::Creating);
        assert!(!s.release_claim("c", "you").unwrap());
        let new = NewAgent { name: "c", spec_json: "{}", state_dir: "/x/c", ..Default::default() };
        assert!(matches!(s.fill_claim(&new, "you"), Err(StoreError::NotFound(_))));
        s.fill_claim(&new, "me").unwrap();
        let c = s.get("c").unwrap();
        assert_eq!((c.state, c.generation, c.owner), (AgentState::Starting, 1, None));
        // Filled, it is no claim any more.
        assert!(!s.release_claim("c", "me").unwrap());
        s.claim("d", "/x/d", "me").unwrap();
        assert!(s.release_claim("d", "me").unwrap());
        assert!(matches!(s.get("d"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }
}
