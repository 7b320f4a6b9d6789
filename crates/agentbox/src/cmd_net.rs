//! `net` (an agent's network audit) and `allow` (widen a running agent's policy).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Duration;

use agentbox_core::{NetworkMode, SandboxSpec};
use agentbox_proxy::{format_utc, read_records, AuditRecord};
use agentbox_supervisor::paths;
use anyhow::{Context, Result};

use crate::cli::{AllowArgs, NetArgs};
use agentbox_engine::agents;
use agentbox_engine::config::Config;
use agentbox_engine::Home;

/// One row per connection: its decision, joined with its close record (bytes) when it ended.
fn rows(records: Vec<AuditRecord>) -> Vec<AuditRecord> {
    let mut by_conn: BTreeMap<u64, AuditRecord> = BTreeMap::new();
    for r in records {
        match (r.event.as_str(), by_conn.get_mut(&r.conn)) {
            ("close", Some(row)) => {
                row.bytes_up = r.bytes_up;
                row.bytes_down = r.bytes_down;
                row.swapped = r.swapped;
            }
            // A pending request is replaced by what was decided for it.
            ("decision", _) => {
                by_conn.insert(r.conn, r);
            }
            _ => {}
        }
    }
    by_conn.into_values().collect()
}

fn line(r: &AuditRecord) -> String {
    let mut s = format!("{}  {:<9} {:<8} {}:{}", format_utc(r.ts_ms), r.decision, r.method, r.host, r.port);
    if r.bytes_up > 0 || r.bytes_down > 0 {
        s.push_str(&format!("  up {} down {}", r.bytes_up, r.bytes_down));
    }
    if !r.swapped.is_empty() {
        s.push_str(&format!("  secrets {}", r.swapped.join(",")));
    }
    if let Some(reason) = &r.reason {
        s.push_str(&format!("  ({})", agentbox_core::termfilter::escape_for_terminal(reason)));
    }
    s
}

pub fn net(args: NetArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let dir = agents::state_dir(&rec);
    let spec: Option<SandboxSpec> = SandboxSpec::decode(&rec.spec).ok();
    if spec.as_ref().is_some_and(|s| s.network != NetworkMode::Proxy) {
        eprintln!("agentbox: {} does not use the egress proxy; nothing is audited", args.name);
    }
    let path = paths::net_log(&dir);
    if !args.follow {
        let records = read_records(&path).with_context(|| format!("reading {}", path.display()))?;
        if args.json {
            for r in records {
                println!("{}", serde_json::to_string(&r)?);
            }
        } else {
            println!("{:<24}  {:<9} {:<8} DESTINATION", "TIME", "DECISION", "METHOD");
            for r in rows(records) {
                println!("{}", line(&r));
            }
        }
        return Ok(0);
    }
    // Follow: every record as it is written (decisions, then closes with their bytes).
    let mut offset = 0u64;
    let mut pending = String::new();
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut reader = BufReader::new(f);
            loop {
                let n = reader.read_line(&mut pending)?;
                if n == 0 || !pending.ends_with('\n') {
                    break;
                }
                offset += pending.len() as u64;
                if let Ok(r) = serde_json::from_str::<AuditRecord>(&pending) {
                    if args.json {
                        print!("{pending}");
                    } else {
                        println!("{}{}", line(&r), if r.event == "close" { "  closed" } else { "" });
                    }
                }
                pending.clear();
            }
        }
        let rec = agents::get(&store, &args.name)?;
        if !agents::is_live_state(&rec.state) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn allow(args: AllowArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    agentbox_engine::net::allow(&home, &store, &args.name, &args.host, args.once, args.always)?;
    if args.always {
        eprintln!(
            "agentbox: {} is allowed for every agent from now on ({})",
            args.host,
            Config::path(&home).display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(conn: u64, event: &str, decision: &str, up: u64) -> AuditRecord {
        AuditRecord {
            ts_ms: conn,
            agent: "a".into(),
            conn,
            event: event.into(),
            method: "CONNECT".into(),
            host: format!("h{conn}"),
            port: 443,
            decision: decision.into(),
            reason: None,
            swapped: vec![],
            bytes_up: up,
            bytes_down: 0,
        }
    }

    #[test]
    fn rows_join_decisions_and_closes() {
        let got = rows(vec![
            rec(1, "decision", "tunnel", 0),
            rec(2, "decision", "pending", 0),
            rec(2, "decision", "denied", 0),
            rec(1, "close", "tunnel", 42),
            rec(3, "decision", "intercept", 0),
        ]);
        let summary: Vec<(u64, &str, u64)> =
            got.iter().map(|r| (r.conn, r.decision.as_str(), r.bytes_up)).collect();
        assert_eq!(summary, vec![(1, "tunnel", 42), (2, "denied", 0), (3, "intercept", 0)]);
    }
}
