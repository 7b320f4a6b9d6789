//! Human-in-the-loop requests: an agent's screen shows a question for a person. At most one
//! request per agent is open at a time (a partial unique index says so, so two detections racing
//! cannot both open one).

use agentbox_core::{HitlKind, HitlState};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::{now_ms, Col, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HitlRecord {
    pub id: i64,
    pub agent: String,
    pub state: HitlState,
    pub kind: HitlKind,
    pub score: f64,
    /// The line that asks.
    pub prompt: String,
    /// The screen when it was asked.
    pub screen: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub answer: Option<String>,
}

const HITL_COLUMNS: &str = "id, agent, state, kind, score, prompt, screen, created_at, closed_at, answer";

fn hitl_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HitlRecord> {
    Ok(HitlRecord {
        id: r.get(0)?,
        agent: r.get(1)?,
        state: r.get::<_, Col<HitlState>>(2)?.0,
        kind: r.get::<_, Col<HitlKind>>(3)?.0,
        score: r.get(4)?,
        prompt: r.get(5)?,
        screen: r.get(6)?,
        created_at: r.get(7)?,
        closed_at: r.get(8)?,
        answer: r.get(9)?,
    })
}

impl Store {
    /// Opens a request for `agent` unless one is open already; returns the new request's id.
    pub fn open_hitl(
        &self,
        agent: &str,
        kind: HitlKind,
        score: f64,
        prompt: &str,
        screen: &str,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "INSERT INTO hitl (agent, state, kind, score, prompt, screen, created_at)
             VALUES (?1, 'open', ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![agent, kind.as_str(), score, prompt, screen, now],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, 'hitl', ?3)",
            params![now, agent, format!("#{id} {kind}: {prompt}")],
        )?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// The agent's open request, if any.
    pub fn open_hitl_of(&self, agent: &str) -> Result<Option<HitlRecord>> {
        let sql = format!("SELECT {HITL_COLUMNS} FROM hitl WHERE agent = ?1 AND state = 'open'");
        Ok(self.conn.query_row(&sql, [agent], hitl_from_row).optional()?)
    }

    pub fn hitl(&self, id: i64) -> Result<HitlRecord> {
        let sql = format!("SELECT {HITL_COLUMNS} FROM hitl WHERE id = ?1");
        self.conn.query_row(&sql, [id], hitl_from_row).optional()?.ok_or(StoreError::NoHitl(id))
    }

    /// Requests, newest first: the open ones, or all of them.
    pub fn hitl_list(&self, open_only: bool, limit: usize) -> Result<Vec<HitlRecord>> {
        let sql = format!(
            "SELECT {HITL_COLUMNS} FROM hitl WHERE (?1 = 0 OR state = 'open') ORDER BY id DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![open_only as i64, limit as i64], hitl_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Closes an open request (`answered` with the answer, or `gone` with why); false when it
    /// was not open any more.
    pub fn close_hitl(&self, id: i64, state: HitlState, answer: Option<&str>, detail: &str) -> Result<bool> {
        let now = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        let agent: Option<String> = tx
            .query_row("SELECT agent FROM hitl WHERE id = ?1 AND state = 'open'", [id], |r| r.get(0))
            .optional()?;
        let Some(agent) = agent else { return Ok(false) };
        tx.execute(
            "UPDATE hitl SET state = ?2, answer = ?3, closed_at = ?4 WHERE id = ?1",
            params![id, state.as_str(), answer, now],
        )?;
        let event = if state == HitlState::Answered { "hitl-answered" } else { "hitl-closed" };
        tx.execute(
            "INSERT INTO events (at, agent, event, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now, agent, event, format!("#{id} {detail}")],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_open_request_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let id = s.open_hitl("a", HitlKind::YesNo, 0.95, "Continue? [y/N]", "screen").unwrap().unwrap();
        assert_eq!(s.open_hitl("a", HitlKind::YesNo, 0.95, "again", "screen").unwrap(), None);
        let other = s.open_hitl("b", HitlKind::Question, 0.9, "Why?", "").unwrap().unwrap();
        assert_ne!(id, other);
        assert_eq!(s.open_hitl_of("a").unwrap().unwrap().prompt, "Continue? [y/N]");
        assert_eq!(s.hitl_list(true, 10).unwrap().len(), 2);
        assert!(s.close_hitl(id, HitlState::Answered, Some("y"), "answered: y").unwrap());
        assert!(!s.close_hitl(id, HitlState::Gone, None, "").unwrap());
        assert_eq!(s.hitl(id).unwrap().answer.as_deref(), Some("y"));
        assert!(s.open_hitl_of("a").unwrap().is_none());
        // Answered, the slot opens again.
        assert!(s.open_hitl("a", HitlKind::YesNo, 0.95, "Next? [y/N]", "").unwrap().is_some());
        assert_eq!(s.hitl_list(false, 10).unwrap().len(), 3);
        assert!(matches!(s.hitl(999), Err(StoreError::NoHitl(999))));
        let kinds: Vec<String> = s.events(10, None).unwrap().into_iter().map(|e| e.event).collect();
        assert_eq!(kinds, ["hitl", "hitl", "hitl-answered", "hitl"]);
    }
}
