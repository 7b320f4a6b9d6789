//! The network audit: one JSON line per event in the agent's `net.jsonl` (0600). A connection
//! attempt writes a `decision` record at once; an allowed one writes a `close` record with the
//! bytes that went each way when it ends. `agentbox net` joins them by `conn`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub agent: String,
    /// Connection number, unique within the agent's audit.
    pub conn: u64,
    /// `decision` or `close`.
    pub event: String,
    /// CONNECT, or the method of a plain-HTTP request.
    #[serde(default)]
    pub method: String,
    pub host: String,
    pub port: u16,
    /// `tunnel`, `intercept`, `http`, `denied` or `pending` (waiting for `agentbox allow`).
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Secrets swapped in on this connection (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swapped: Vec<String>,
    #[serde(default)]
    pub bytes_up: u64,
    #[serde(default)]
    pub bytes_down: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where records go: a file, and optionally stderr for refusals (foreground `run`).
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
    echo_refusals: bool,
}

impl Audit {
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Self { file: Some(Mutex::new(file)), echo_refusals: false })
    }

    /// Refusals are printed for the person at the terminal; nothing is kept.
    pub fn to_stderr() -> Self {
        Self { file: None, echo_refusals: true }
    }

    pub fn record(&self, rec: &AuditRecord) {
        if self.echo_refusals && rec.decision == "denied" {
            eprintln!(
                "agentbox: network: refused {} {}:{}: {}",
                rec.method,
                rec.host,
                rec.port,
                rec.reason.as_deref().unwrap_or("")
            );
        }
        if let Some(f) = &self.file {
            if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(rec), f.lock()) {
                line.push(b'\n');
                // One write per line with O_APPEND: readers never see half a record.
                let _ = f.write_all(&line);
            }
        }
    }
}

/// Reads an audit file; lines that do not parse are skipped (a crash may cut the last one).
pub fn read_records(path: &Path) -> std::io::Result<Vec<AuditRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// `2026-11-22T09:10:11.123Z` for a time in milliseconds since the epoch.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(1_795_346_411_123), "2026-11-22T11:20:11.123Z");
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let audit = Audit::to_file(&path).unwrap();
        let rec = AuditRecord {
            ts_ms: 1,
            agent: "a".into(),
            conn: 1,
            event: "decision".into(),
            method: "CONNECT".into(),
            host: "x.com".into(),
            port: 443,
            decision: "denied".into(),
            reason: Some("no".into()),
            swapped: vec![],
            bytes_up: 0,
            bytes_down: 0,
        };
        audit.record(&rec);
        audit.record(&AuditRecord { event: "close".into(), ..rec.clone() });
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{cut").unwrap();
        let got = read_records(&path).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], rec);
    }
}
