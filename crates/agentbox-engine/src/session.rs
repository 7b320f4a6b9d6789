//! A running agent's terminal, from outside: type into it, read its screen, resize it, answer
//! its HITL requests.

use agentbox_core::HitlState;
use agentbox_store::{AgentRecord, HitlRecord, Store};

use crate::agents::{self, is_live_state};
use crate::bail;
use crate::error::{Error, Result};

fn live(store: &Store, name: &str) -> Result<AgentRecord> {
    let rec = agents::get(store, name)?;
    if !is_live_state(&rec.state) {
        bail!(Error::conflict(format!(
            "agent '{}' is {}; nothing is reading its terminal",
            rec.name, rec.state
        )));
    }
    Ok(rec)
}

/// Answers an open HITL request: claims it (so two people answering at once cannot both type),
/// then types the text (and Enter) into the agent.
///
/// A request that went away because its prompt was redrawn (the screen resized, the agent
/// repainted) has a successor: the agent's open request asking the same. The answer goes there;
/// when the open request asks something else, the error names it.
pub fn answer_hitl(store: &Store, id: i64, text: &str, enter: bool) -> Result<HitlRecord> {
    let mut req = store.hitl(id)?;
    if req.state == HitlState::Gone {
        let successor =
            store.hitl_list(true, 500)?.into_iter().find(|r| r.agent == req.agent && r.id > req.id);
        match successor {
            Some(next) if next.prompt.split_whitespace().eq(req.prompt.split_whitespace()) => req = next,
            Some(next) => bail!(Error::conflict(format!(
                "request #{id} is gone; {} asks #{} now: `agentbox hitl answer {} ...`",
                next.agent, next.id, next.id
            ))),
            None => bail!(Error::conflict(format!("request #{id} is gone: its prompt left the screen"))),
        }
    }
    let id = req.id;
    if req.state != HitlState::Open {
        bail!(Error::conflict(format!("request #{id} is {} already", req.state)));
    }
    if text.contains('\0') || text.len() > 64 * 1024 {
        bail!(Error::invalid("the answer must be text without NUL bytes, at most 64 KiB"));
    }
    let rec = live(store, &req.agent)?;
    if !store.close_hitl(id, HitlState::Answered, Some(text), &format!("answered: {text}"))? {
        bail!(Error::conflict(format!("request #{id} was closed meanwhile")));
    }
    let mut bytes = text.as_bytes().to_vec();
    if enter {
        bytes.push(b'\r');
    }
    agentbox_supervisor::send_input(&agents::state_dir(&rec), &bytes)?;
    Ok(store.hitl(id)?)
}

/// Types bytes into a running agent's terminal.
pub fn send(store: &Store, name: &str, bytes: &[u8]) -> Result<()> {
    let rec = live(store, name)?;
    agentbox_supervisor::send_input(&agents::state_dir(&rec), bytes)?;
    Ok(())
}

/// The current screen of an agent (its last screen once it ended).
pub fn screen(store: &Store, name: &str, ansi: bool) -> Result<(AgentRecord, String)> {
    let rec = agents::get(store, name)?;
    let text = agentbox_supervisor::screen(&agents::state_dir(&rec), ansi)?;
    Ok((rec, text))
}

/// Resizes a running agent's terminal.
pub fn resize(store: &Store, name: &str, rows: u16, cols: u16) -> Result<()> {
    if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
        bail!(Error::invalid(format!(
            "terminal size {rows}x{cols}: rows and cols must be between 1 and 1000"
        )));
    }
    let rec = live(store, name)?;
    agentbox_supervisor::resize(&agents::state_dir(&rec), rows, cols)?;
    Ok(())
}
