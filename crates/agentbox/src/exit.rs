//! Exit codes of `agentbox run`, the same as docker's and coreutils' `timeout`:
//!
//! | code    | meaning                                                  |
//! |---------|----------------------------------------------------------|
//! | 0-123   | the command's own exit code                              |
//! | 124     | `--timeout` expired; the sandbox was killed               |
//! | 125     | agentbox itself failed (bad flags, isolation unavailable) |
//! | 126     | the command exists but could not be executed             |
//! | 127     | the command was not found inside the sandbox             |
//! | 128+N   | the command was killed by signal N                       |

pub const TIMED_OUT: i32 = 124;
pub const AGENTBOX_FAILED: i32 = 125;
pub const CANNOT_EXECUTE: i32 = 126;
pub const NOT_FOUND: i32 = 127;
