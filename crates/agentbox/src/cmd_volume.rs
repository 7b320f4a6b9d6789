//! `volume create|ls|rm`: named volumes, here or on a server.

use agentbox_engine::control::Control;
use anyhow::Result;

use crate::cli::{VolumeArgs, VolumeCommand};

pub fn volume(c: &dyn Control, args: VolumeArgs) -> Result<i32> {
    match args.command {
        VolumeCommand::Create { name } => {
            println!("{}", c.volume_create(&name)?.name);
            Ok(0)
        }
        VolumeCommand::Ls { json } => {
            let all = c.volumes()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            println!("{:<24} {:>12}  USED BY", "NAME", "SIZE");
            for v in all {
                let used = if v.used_by.is_empty() { "-".to_string() } else { v.used_by.join(",") };
                println!("{:<24} {:>8} KiB  {used}", v.name, v.size.div_ceil(1024));
            }
            Ok(0)
        }
        VolumeCommand::Rm { names } => {
            // Like the other verbs on several things: each done is printed, each failure said.
            let mut failed = 0;
            for name in &names {
                match c.volume_remove(name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("agentbox: {name}: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(i32::from(failed > 0))
        }
    }
}
