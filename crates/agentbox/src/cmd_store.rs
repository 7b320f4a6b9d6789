//! `store check` and `store recover`: the state database on this machine.

use agentbox_engine::{recovery, Home};
use anyhow::Result;

use crate::cli::{StoreArgs, StoreCommand};

pub fn store(args: StoreArgs) -> Result<i32> {
    let home = Home::open()?;
    match args.command {
        StoreCommand::Check => {
            let c = recovery::check(&home);
            if c.problems.is_empty() {
                println!("{}: ok", c.path.display());
                return Ok(0);
            }
            println!("{}: damaged", c.path.display());
            for p in &c.problems {
                println!("  {p}");
            }
            println!("`agentbox store recover` rebuilds it from the agents' directories");
            Ok(1)
        }
        StoreCommand::Recover => {
            let r = recovery::recover(&home)?;
            for p in &r.kept_aside {
                println!("kept aside: {}", p.display());
            }
            for a in &r.agents {
                println!("recovered:  {a} (failed; `agentbox restart {a}` starts it)");
            }
            for d in &r.skipped {
                println!("skipped:    {} (no record in it)", d.display());
            }
            Ok(0)
        }
    }
}
