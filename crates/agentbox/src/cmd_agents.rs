//! `agents install|list|update|remove`: agents' programs on this machine.

use agentbox_engine::{installs, Home};
use anyhow::Result;

use crate::cli::{AgentsArgs, AgentsCommand};

pub fn agents(args: AgentsArgs) -> Result<i32> {
    let home = Home::open()?;
    match args.command {
        AgentsCommand::Install { names } => install(&home, &names, false),
        AgentsCommand::Update { names } => install(&home, &names, true),
        AgentsCommand::Remove { names } => {
            for n in &names {
                installs::remove(&home, n)?;
                println!("{n}");
            }
            Ok(0)
        }
        AgentsCommand::List { json } => {
            let all = installs::list(&home)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            println!("{:<14} {:<34} INSTALLED", "PROFILE", "PACKAGE");
            for l in &all {
                let state = match &l.installed {
                    Some(i) => match &i.node {
                        Some(node) => format!("{} (with {node})", i.version),
                        None => i.version.clone(),
                    },
                    None => "-".into(),
                };
                println!("{:<14} {:<34} {state}", l.profile, l.package);
            }
            Ok(0)
        }
    }
}

fn install(home: &Home, names: &[String], again: bool) -> Result<i32> {
    for n in names {
        if !again {
            if let Some(i) = installs::installed(home, n) {
                eprintln!(
                    "agentbox: {n} {} is installed already (`agentbox agents update {n}` gets the newest)",
                    i.version
                );
                continue;
            }
        }
        eprintln!("agentbox: installing {n} ...");
        let started = std::time::Instant::now();
        let i = installs::install(home, n, again)?;
        eprintln!("agentbox: {n} {} installed in {:.0?}", i.version, started.elapsed());
        println!("{n}");
    }
    Ok(0)
}
