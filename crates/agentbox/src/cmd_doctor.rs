use agentbox_jail::{doctor, Status};

use crate::cli::DoctorArgs;

pub fn run(args: DoctorArgs) -> i32 {
    let mut checks = doctor();
    checks.push(crate::cmd_vm::doctor_check());
    checks.push(leftovers_check());
    checks.push(store_check());
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        match serde_json::to_string_pretty(&checks) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("agentbox: {e}");
                return 1;
            }
        }
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:<16} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<16} -> {fix}", "");
            }
        }
    }
    i32::from(failed)
}

/// Whether the state database is sound.
fn store_check() -> agentbox_jail::Check {
    use agentbox_jail::Check;
    let c = match agentbox_engine::Home::open() {
        Ok(home) => agentbox_engine::recovery::check(&home),
        Err(e) => {
            return Check { name: "store", status: Status::Warn, detail: e.to_string(), fix: None };
        }
    };
    match c.problems.first() {
        None => Check {
            name: "store",
            status: Status::Ok,
            detail: format!("{} is sound", c.path.display()),
            fix: None,
        },
        Some(p) => Check {
            name: "store",
            status: Status::Fail,
            detail: format!("{} is damaged: {p}", c.path.display()),
            fix: Some("agentbox store recover".into()),
        },
    }
}

/// What crashes left in AGENTBOX_HOME (a warning: `clean` removes it).
fn leftovers_check() -> agentbox_jail::Check {
    use agentbox_jail::Check;
    let found = agentbox_engine::Home::open()
        .and_then(|h| Ok((h.store()?, h)))
        .and_then(|(s, h)| agentbox_engine::lifecycle::leftovers(&h, &s));
    match found {
        Ok(l) if l.dead_claims.is_empty() && l.orphan_dirs.is_empty() => {
            Check { name: "leftovers", status: Status::Ok, detail: "none in AGENTBOX_HOME".into(), fix: None }
        }
        Ok(l) => {
            let mut what: Vec<String> =
                l.dead_claims.iter().map(|n| format!("'{n}' (its spawn died)")).collect();
            what.extend(l.orphan_dirs.iter().map(|d| format!("{} (no agent)", d.display())));
            Check {
                name: "leftovers",
                status: Status::Warn,
                detail: format!("left by crashes: {}", what.join(", ")),
                fix: Some("agentbox clean".into()),
            }
        }
        Err(e) => Check {
            name: "leftovers",
            status: Status::Warn,
            detail: format!("cannot read AGENTBOX_HOME: {e}"),
            fix: None,
        },
    }
}
