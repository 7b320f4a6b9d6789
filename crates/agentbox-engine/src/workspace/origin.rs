//! Where an agent's workspace came from, recorded at spawn: the directory it was made from (if
//! any), how (an overlay on it or a copy of it), and when. `apply` writes back to that directory
//! and treats what changed there since `since` as the person's own work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};

pub(crate) const FILE: &str = "origin.json";

/// How the workspace holds the directory's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layering {
    /// An overlayfs on the directory: the agent's changes alone in its upper layer.
    Overlay,
    /// A full copy.
    Copy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub dir: PathBuf,
    pub layering: Layering,
    /// When the workspace was made (Unix nanoseconds): a path of `dir` whose status changed
    /// since was changed by someone else than the agent.
    pub since_ns: i64,
}

impl Origin {
    pub fn new(dir: PathBuf, layering: Layering) -> Self {
        Self { dir, layering, since_ns: now_ns() }
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(FILE);
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// The origin recorded for an agent; `None` when its workspace was not made from a
    /// directory (or by an agentbox that did not record it).
    pub fn load(state_dir: &Path) -> Result<Option<Self>> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| crate::error::Error::internal(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::error::Error::from(e).context(format!("reading {}", path.display()))),
        }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
