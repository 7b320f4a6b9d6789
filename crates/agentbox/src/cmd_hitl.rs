//! `agentbox hitl list|answer`.

use agentbox_core::termfilter::escape_for_terminal as esc;
use anyhow::Result;

use crate::cli::{HitlArgs, HitlCommand};
use agentbox_engine::agents::age;
use agentbox_engine::Home;

pub fn hitl(args: HitlArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    match args.command {
        HitlCommand::List { json, all } => {
            let list = store.hitl_list(!all, 500)?;
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
            let r = agentbox_engine::session::answer_hitl(&store, id, &text, !no_enter)?;
            println!("answered #{} ({})", r.id, r.agent);
            Ok(0)
        }
    }
}
