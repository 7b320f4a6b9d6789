//! Tasks: a manifest and where it is in its life. The runner moves a task from state to state;
//! every move is one transaction that also journals it (`task-<state>` events with the reason),
//! so a crash between the two cannot happen and a restart finds every task where it was.

use agentbox_core::TaskState;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::{now_ms, Col, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRecord {
    pub id: String,
    /// The manifest's title.
    pub name: String,
    /// The validated manifest, JSON.
    #[serde(skip)]
    pub manifest: String,
    pub state: TaskState,
    /// Why it is in this state (for failed and cancelled: what went wrong or who cancelled).
    pub reason: String,
    /// The agent of the current (or last) attempt.
    pub agent: Option<String>,
    pub attempt: i64,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the current attempt's agent started running (the timeout counts from here).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
}

const TASK_COLUMNS: &str =
    "id, name, manifest, state, reason, agent, attempt, cancel_requested, created_at, \
     updated_at, started_at, finished_at, exit_code";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        manifest: r.get(2)?,
        state: r.get::<_, Col<TaskState>>(3)?.0,
        reason: r.get(4)?,
        agent: r.get(5)?,
        attempt: r.get(6)?,
        cancel_requested: r.get::<_, i64>(7)? != 0,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        exit_code: r.get(12)?,
    })
}

/// What a transition changes besides the state.
#[derive(Debug, Default, Clone)]
pub struct TaskChange<'a> {
    pub agent: Option<&'a str>,
    pub attempt: Option<i64>,
    pub started: bool,
    pub exit_code: Option<i64>,
}

impl Store {
    /// Records a new pending task.
    pub fn create_task(&self, id: &str, name: &str, manifest_json: &str) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO tasks (id, name, manifest, state, created_at, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
            params![id, name, manifest_json, now],
        )?;
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, 'task-pending', ?3)",
            params![now, id, "submitted"],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn task(&self, id: &str) -> Result<TaskRecord> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], task_from_row)
            .optional()?
            .ok_or_else(|| StoreError::NoTask(id.to_string()))
    }

    /// The task whose id is `id` or starts with it (when only one does).
    pub fn find_task(&self, id: &str) -> Result<TaskRecord> {
        if let Ok(t) = self.task(id) {
            return Ok(t);
        }
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2");
        let mut stmt = self.conn.prepare(&sql)?;
        let found: Vec<TaskRecord> = stmt.query_map([id], task_from_row)?.collect::<rusqlite::Result<_>>()?;
        match found.len() {
            1 => Ok(found.into_iter().next().ok_or_else(|| StoreError::NoTask(id.to_string()))?),
            0 => Err(StoreError::NoTask(id.to_string())),
            _ => Err(StoreError::AmbiguousTask(id.to_string())),
        }
    }

    /// All tasks, oldest first.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_at, id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves a task from `from` to `to`, journaling it; false (and nothing changed) when the task
    /// is no longer in `from` (someone else moved it: a cancel, another runner). A move the states
    /// do not allow is refused.
    pub fn move_task(
        &self,
        id: &str,
        from: TaskState,
        to: TaskState,
        reason: &str,
        change: &TaskChange<'_>,
    ) -> Result<bool> {
        if !from.can_move_to(to) {
            return Err(StoreError::WrongState {
                what: format!("task {id}"),
                now: from.to_string(),
                to: to.to_string(),
            });
        }
        let (from, to) = (from.as_str(), to.as_str());
        let now = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE tasks SET state = ?3, reason = ?4, updated_at = ?5,
               agent = COALESCE(?6, agent), attempt = COALESCE(?7, attempt),
               started_at = CASE WHEN ?8 THEN ?5 ELSE started_at END,
               exit_code = COALESCE(?9, exit_code),
               finished_at = CASE WHEN ?3 IN ('completed', 'failed', 'cancelled') THEN ?5 ELSE finished_at END
             WHERE id = ?1 AND state = ?2",
            params![
                id,
                from,
                to,
                reason,
                now,
                change.agent,
                change.attempt,
                change.started,
                change.exit_code
            ],
        )?;
        if n == 1 {
            tx.execute(
                "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, ?3, ?4)",
                params![now, id, format!("task-{to}"), reason],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Asks for a task to be cancelled. A pending task is cancelled at once (nothing runs yet);
    /// a task in progress is flagged for its runner. Returns the task as it is now.
    pub fn cancel_task(&self, id: &str, reason: &str) -> Result<TaskRecord> {
        let t = self.task(id)?;
        if t.state == TaskState::Pending
            && self.move_task(id, TaskState::Pending, TaskState::Cancelled, reason, &TaskChange::default())?
        {
            return self.task(id);
        }
        if !t.state.is_final() {
            self.conn.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )?;
            self.record(id, "task-cancel-requested", reason)?;
        }
        self.task(id)
    }

    /// Journal entries about one agent or task, oldest first.
    pub fn events_of(&self, subject: &str, limit: usize) -> Result<Vec<crate::Event>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, agent, event, detail FROM
               (SELECT * FROM events WHERE agent = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![subject, limit as i64], crate::event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    use super::*;

    #[test]
    fn transitions_are_conditional_and_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        s.create_task("abc123", "t", "{}").unwrap();
        assert!(matches!(s.create_task("abc123", "t", "{}"), Err(StoreError::Sql(_))));
        assert!(s
            .move_task("abc123", TaskState::Pending, TaskState::Staging, "", &TaskChange::default())
            .unwrap());
        // A second runner racing for the same task loses.
        assert!(!s
            .move_task("abc123", TaskState::Pending, TaskState::Staging, "", &TaskChange::default())
            .unwrap());
        let change = TaskChange { agent: Some("task-abc123"), attempt: Some(1), ..Default::default() };
        assert!(s.move_task("abc123", TaskState::Staging, TaskState::Provisioning, "", &change).unwrap());
        let started = TaskChange { started: true, ..Default::default() };
        assert!(s.move_task("abc123", TaskState::Provisioning, TaskState::Running, "", &started).unwrap());
        let t = s.find_task("abc").unwrap();
        assert_eq!((t.state, t.agent.as_deref(), t.attempt), (TaskState::Running, Some("task-abc123"), 1));
        assert!(t.started_at.is_some() && t.finished_at.is_none());
        let t = s.cancel_task("abc123", "by user").unwrap();
        assert!(t.cancel_requested);
        assert_eq!(t.state, TaskState::Running);
        // An illegal move is refused outright.
        assert!(matches!(
            s.move_task("abc123", TaskState::Running, TaskState::Staging, "", &TaskChange::default()),
            Err(StoreError::WrongState { .. })
        ));
        let done = TaskChange { exit_code: Some(137), ..Default::default() };
        assert!(s.move_task("abc123", TaskState::Running, TaskState::Cancelled, "by user", &done).unwrap());
        let t = s.task("abc123").unwrap();
        assert_eq!((t.exit_code, t.finished_at.is_some()), (Some(137), true));
        let kinds: Vec<String> = s.events_of("abc123", 100).unwrap().into_iter().map(|e| e.event).collect();
        assert_eq!(
            kinds,
            [
                "task-pending",
                "task-staging",
                "task-provisioning",
                "task-running",
                "task-cancel-requested",
                "task-cancelled"
            ]
        );
        // Pending tasks are cancelled on the spot.
        s.create_task("abd000", "u", "{}").unwrap();
        assert_eq!(s.cancel_task("abd000", "x").unwrap().state, TaskState::Cancelled);
        assert!(matches!(s.find_task("ab"), Err(StoreError::AmbiguousTask(_))));
        assert!(matches!(s.find_task("zz"), Err(StoreError::NoTask(_))));
        assert_eq!(s.tasks().unwrap().len(), 2);
    }
}
