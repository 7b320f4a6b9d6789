//! `restart` (here or on a server), `clone`, `rename` (here).

use agentbox_engine::control::Control;
use agentbox_engine::{lifecycle, Home};
use anyhow::Result;

use crate::cli::{CloneArgs, RenameArgs, RestartArgs};

pub fn restart(c: &dyn Control, args: RestartArgs) -> Result<i32> {
    crate::cmd_lifecycle::each(c, &args.targets, |c, name| c.restart(name).map(drop))
}

pub fn clone(args: CloneArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = lifecycle::clone(&home, &store, &args.src, &args.dst)?;
    println!("{}", rec.name);
    Ok(0)
}

pub fn rename(args: RenameArgs) -> Result<i32> {
    let home = Home::open()?;
    let mut store = home.store()?;
    let rec = lifecycle::rename(&home, &mut store, &args.old, &args.new)?;
    println!("{}", rec.name);
    Ok(0)
}
