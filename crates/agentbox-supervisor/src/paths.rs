//! Where an agent's files live inside its state directory.

use std::path::{Path, PathBuf};

pub fn socket(state_dir: &Path) -> PathBuf {
    state_dir.join("sock")
}
pub fn log(state_dir: &Path) -> PathBuf {
    state_dir.join("log")
}
/// The size marks of the log file at `log` (`log.sizes`, `log.1.sizes`): `OFFSET ROWS COLS`
/// per line, where the terminal changed size.
pub fn log_sizes(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sizes", log.display()))
}
/// The time marks of the log file at `log` (`log.times`, `log.1.times`): `OFFSET UNIX_MS` per
/// line, the time the byte at that offset was written (one mark a second at most).
pub fn log_times(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.times", log.display()))
}
pub fn screen_text(state_dir: &Path) -> PathBuf {
    state_dir.join("screen.txt")
}
pub fn screen_ansi(state_dir: &Path) -> PathBuf {
    state_dir.join("screen.ansi")
}
pub fn workspace(state_dir: &Path) -> PathBuf {
    state_dir.join("workspace")
}
pub fn home(state_dir: &Path) -> PathBuf {
    state_dir.join("home")
}
/// The network audit of the agent's egress proxy (JSON lines).
pub fn net_log(state_dir: &Path) -> PathBuf {
    state_dir.join("net.jsonl")
}
