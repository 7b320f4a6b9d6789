//! `restart`, `clone`, `rename`.

use agentbox_engine::{lifecycle, Home};
use anyhow::Result;

use crate::cli::{CloneArgs, RenameArgs, RestartArgs};

pub fn restart(args: RestartArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = lifecycle::restart(&home, &store, &args.name)?;
    println!("{}", rec.name);
    Ok(0)
}

pub fn clone(args: CloneArgs) -> Result<i32> {
    let home = Home::open()?;
    let mut store = home.store()?;
    let rec = lifecycle::clone(&home, &mut store, &args.src, &args.dst)?;
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
