use agentbox_jail::{doctor, Status};

use crate::cli::DoctorArgs;

pub fn run(args: DoctorArgs) -> i32 {
    let mut checks = doctor();
    checks.push(crate::cmd_vm::doctor_check());
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
