//! The HITL detector against recorded screens and sessions (see `tests/hitl/README.md`).
//!
//! - every screen in `screens/ask` must open a request (given the idle time where it needs it);
//! - no screen in `screens/calm` may;
//! - replaying the recorded ordinary sessions (shells, builds, test runs) through a terminal
//!   model, and judging the screen wherever the output paused, must open none: the false-positive
//!   figure in BENCHMARKS.md comes from here (`bench/hitl.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_supervisor::hitl::{detect, HitlConfig};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hitl").join(sub)
}

fn files(sub: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

const LONG_IDLE: Duration = Duration::from_secs(3600);

#[test]
fn recorded_prompts_are_detected() {
    let cfg = HitlConfig::default();
    let mut immediate = 0;
    let screens = files("screens/ask", "txt");
    assert!(screens.len() >= 10);
    for path in &screens {
        let text = std::fs::read_to_string(path).unwrap();
        let d = detect(&text, LONG_IDLE, &cfg);
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(d.as_ref().is_some_and(|d| d.score >= cfg.threshold), "{name}: {d:?}");
        if detect(&text, Duration::ZERO, &cfg).is_some_and(|d| d.score >= cfg.threshold) {
            immediate += 1;
        }
        println!("ask  {name}: {:?}", d.unwrap());
    }
    println!(
        "HITL prompts detected: {}/{} ({immediate} without waiting for the idle time)",
        screens.len(),
        screens.len()
    );
    for path in files("screens/calm", "txt") {
        let text = std::fs::read_to_string(&path).unwrap();
        let d = detect(&text, LONG_IDLE, &cfg);
        assert!(d.as_ref().is_none_or(|d| d.score < cfg.threshold), "{}: {d:?}", path.display());
    }
}

/// `script --log-timing` lines: `<delay seconds> <bytes>`.
fn chunks(log: &[u8], timing: &str) -> Vec<(f64, Vec<u8>)> {
    // The log starts with script's own header line, which the timing does not count.
    let body_start = log.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut at = body_start;
    let mut out = Vec::new();
    for line in timing.lines() {
        let mut it = line.split_whitespace();
        let (Some(delay), Some(n)) = (it.next(), it.next()) else { continue };
        let (delay, n): (f64, usize) = (delay.parse().unwrap(), n.parse().unwrap());
        let end = (at + n).min(log.len());
        out.push((delay, log[at..end].to_vec()));
        at = end;
    }
    out
}

#[test]
fn ordinary_sessions_open_no_request() {
    let cfg = HitlConfig { idle: Duration::from_secs(1), ..HitlConfig::default() };
    let (mut checks, mut false_positives) = (0, 0);
    // The worst case too: every screen the sessions ever showed, judged as if the agent had
    // then gone quiet for good.
    let (mut worst_checks, mut worst_false) = (0, 0);
    let logs = files("sessions", "log");
    assert!(logs.len() >= 6);
    for log_path in &logs {
        let log = std::fs::read(log_path).unwrap();
        let timing = std::fs::read_to_string(log_path.with_extension("timing")).unwrap();
        let chunks = chunks(&log, &timing);
        assert!(!chunks.is_empty());
        let mut parser = vt100::Parser::new(
            std::num::NonZeroU16::new(30).unwrap(),
            std::num::NonZeroU16::new(100).unwrap(),
            0,
        );
        for (i, (_, bytes)) in chunks.iter().enumerate() {
            parser.process(bytes);
            worst_checks += 1;
            if detect(&parser.screen().contents(), LONG_IDLE, &cfg).is_some_and(|d| d.score >= cfg.threshold)
            {
                worst_false += 1;
            }
            // The pause after this chunk is how long the screen stayed as it is now.
            let idle = chunks.get(i + 1).map_or(LONG_IDLE, |c| Duration::from_secs_f64(c.0));
            if idle < cfg.settle {
                continue;
            }
            checks += 1;
            let screen = parser.screen().contents();
            if let Some(d) = detect(&screen, idle, &cfg).filter(|d| d.score >= cfg.threshold) {
                false_positives += 1;
                println!("false positive in {}: {d:?}\n{screen}", log_path.display());
            }
        }
    }
    println!(
        "HITL false positives: {false_positives} in {checks} screens judged over {} recorded sessions (idle time 1 s)",
        logs.len()
    );
    println!("HITL false positives, every screen judged as idle: {worst_false} in {worst_checks}");
    assert_eq!(false_positives, 0);
    // Each of these is a command's own output ending in '?' (`echo "is this a question?"`),
    // on screen for milliseconds before the prompt came back: what the idle time is for. More
    // would mean the detector got looser.
    assert!(worst_false <= 3, "{worst_false} screens would open a request if the agent stopped there");
}
