//! `agentbox hitl list|answer`, here or on a server.

use agentbox_core::termfilter::escape_for_terminal as esc;
use agentbox_engine::agents::age;
use agentbox_engine::control::Control;
use anyhow::Result;

use crate::cli::{HitlArgs, HitlCommand};

pub fn hitl(c: &dyn Control, args: HitlArgs) -> Result<i32> {
    match args.command {
        HitlCommand::List { json, all } => {
            let list = c.hitl_list(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<6} {:<20} {:<9} {:<8} {:<6} PROMPT", "ID", "AGENT", "STATE", "KIND", "AGE");
                for r in &list {
                    println!(
                        "{:<6} {:<20} {:<9} {:<8} {:<6} {}",
                        r.id,
                        r.agent,
                        r.state,
                        r.kind,
                        age(r.created_at),
                        esc(&r.prompt)
                    );
                }
            }
            Ok(0)
        }
        HitlCommand::Answer { id, text, no_enter } => {
            let r = c.answer_hitl(id, &text, !no_enter)?;
            println!("answered #{} ({})", r.id, r.agent);
            Ok(0)
        }
    }
}
