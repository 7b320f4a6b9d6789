//! `net` (an agent's network audit) and `allow` (widen a running agent's policy), here or on a
//! server.

use std::collections::BTreeMap;
use std::time::Duration;

use agentbox_core::NetworkMode;
use agentbox_engine::control::Control;
use agentbox_proxy::{format_utc, AuditRecord};
use anyhow::Result;

use crate::cli::{AllowArgs, NetArgs};

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

/// Records read at once: an audit log's whole history, for practical purposes.
const ALL: usize = 1_000_000;

pub fn net(c: &dyn Control, args: NetArgs) -> Result<i32> {
    let agent = c.get(&args.name)?;
    if agent.network != NetworkMode::Proxy.to_string() {
        eprintln!("agentbox: {} does not use the egress proxy; nothing is audited", args.name);
    }
    let records = c.net_records(&args.name, ALL)?;
    if !args.follow {
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
    let mut seen = 0;
    let mut records = records;
    loop {
        for r in records.iter().skip(seen) {
            if args.json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}{}", line(r), if r.event == "close" { "  closed" } else { "" });
            }
        }
        seen = seen.max(records.len());
        if !c.get(&args.name)?.is_live() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
        records = c.net_records(&args.name, ALL)?;
    }
}

pub fn allow(c: &dyn Control, args: AllowArgs) -> Result<i32> {
    if args.remove {
        c.revoke(&args.name, &args.host, args.always)?;
        let whom = if args.always { "every agent" } else { args.name.as_str() };
        eprintln!("agentbox: {} is no longer allowed for {whom} (open connections are not cut)", args.host);
        return Ok(0);
    }
    c.allow(&args.name, &args.host, args.once, args.always)?;
    if args.always {
        eprintln!(
            "agentbox: {} is allowed for every agent from now on ([network] allow in config.toml)",
            args.host
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
