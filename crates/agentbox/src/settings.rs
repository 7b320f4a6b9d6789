//! The `[hitl]`, `[notify]` and `[tasks]` sections of `config.toml`.

use std::time::Duration;

use agentbox_supervisor::hitl::HitlConfig;
use serde::{Deserialize, Serialize};

/// `[hitl]`: how agents' screens are watched for prompts that wait on a person.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HitlSettings {
    /// Watch screens at all (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Score from 0 to 1 at which a request opens (default 0.85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Seconds of silence after which a last line ending in '?' is a question (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_secs: Option<f64>,
}

impl HitlSettings {
    /// The detector's configuration, or none when watching is off.
    pub fn config(&self) -> anyhow::Result<Option<HitlConfig>> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let mut cfg = HitlConfig::default();
        if let Some(t) = self.threshold {
            anyhow::ensure!(
                (0.0..=1.0).contains(&t),
                "config.toml: [hitl] threshold must be between 0 and 1"
            );
            cfg.threshold = t;
        }
        if let Some(i) = self.idle_secs {
            anyhow::ensure!(
                i.is_finite() && (0.5..=86400.0).contains(&i),
                "config.toml: [hitl] idle_secs must be between 0.5 and 86400"
            );
            cfg.idle = Duration::from_secs_f64(i);
        }
        Ok(Some(cfg))
    }
}

/// `[notify]`: who hears about HITL requests and finished agents and tasks.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// POST a JSON body here for each notice (retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Run notify-send where it exists (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
    /// Also notify when an agent that is not a task's ends (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_exits: Option<bool>,
}

/// `[tasks]`: the task queue.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Tasks that may run at once (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
}

pub const DEFAULT_MAX_TASKS: usize = 2;

impl TaskSettings {
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or(DEFAULT_MAX_TASKS).clamp(1, 256)
    }
}

/// `[profiles.NAME]`: a person's choices for one profile.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// Paths of the profile's `seed_skip` to copy into agents after all (`~/.claude/settings.json`):
    /// the person accepts that the agent sees them.
    #[serde(default)]
    pub seed: Vec<String>,
}
