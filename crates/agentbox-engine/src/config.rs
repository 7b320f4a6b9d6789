//! `AGENTBOX_HOME/config.toml`: what a person set for this machine.
//!
//! ```toml
//! [network]
//! allow = ["registry.npmjs.org", "*.pythonhosted.org"]   # every proxy-mode sandbox
//! ask_timeout = 30                                        # seconds a request waits with --ask
//!
//! [secrets.GITHUB_TOKEN]
//! hosts = ["github.com", "api.github.com"]                # where this secret may be sent
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentbox_core::{check_header_name, check_secret_hosts, HostRule, Profile};
use agentbox_proxy::Resolver;
use agentbox_supervisor::hitl::HitlConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::home::Home;

const DEFAULT_ASK_TIMEOUT: u64 = 30;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub allow: Vec<HostRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_timeout: Option<u64>,
    /// `[network.resolve]`: host names the proxy connects to at a fixed address (`"ip:port"`),
    /// like curl's `--connect-to`: split-horizon names, or a provider's host pointed at a local
    /// stand-in. The operator's choice, so the address is not checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolve: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    pub hosts: Vec<HostRule>,
    /// The request headers the secret is sent in (default: where its provider reads it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

/// `AGENTBOX_HOME/config.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretConfig>,
    #[serde(default)]
    pub hitl: HitlSettings,
    #[serde(default)]
    pub notify: NotifySettings,
    #[serde(default)]
    pub tasks: TaskSettings,
    /// `[profiles.NAME]`: what a person chose for a profile on this machine.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSettings>,
    #[serde(default)]
    pub logs: LogSettings,
}

/// `[logs]`: agents' output logs.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// The most an agent's log keeps, with its one rotated file (`512M`, `2G`; default 512M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

impl LogSettings {
    pub fn limit(&self) -> Result<u64> {
        match &self.max_size {
            None => Ok(agentbox_supervisor::DEFAULT_LOG_LIMIT),
            Some(s) => agentbox_core::parse_size(s)
                .map_err(|e| Error::invalid(format!("config.toml: [logs] max_size: {e}"))),
        }
    }
}

impl Config {
    pub fn path(home: &Home) -> PathBuf {
        home.root.join("config.toml")
    }

    pub fn load(home: &Home) -> Result<Self> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.to_string().trim())))?;
        for (name, s) in &cfg.secrets {
            check_secret_hosts(name, &s.hosts)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            for h in &s.headers {
                check_header_name(h).map_err(|e| {
                    Error::invalid(format!("{}: [secrets.{name}] headers: {e}", path.display()))
                })?;
            }
        }
        cfg.logs.limit()?;
        cfg.tasks.linger().map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Resolver::with_pins(&cfg.network.resolve)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    pub fn ask_timeout(&self) -> Duration {
        Duration::from_secs(self.network.ask_timeout.unwrap_or(DEFAULT_ASK_TIMEOUT))
    }

    /// Adds `rule` to `[network] allow` and writes the file back.
    pub fn add_allow(home: &Home, rule: HostRule) -> Result<()> {
        let mut cfg = Self::load(home)?;
        if cfg.network.allow.contains(&rule) {
            return Ok(());
        }
        cfg.network.allow.push(rule);
        cfg.save(home)
    }

    /// Takes `rule` off `[network] allow` and writes the file back (if it was there).
    pub fn remove_allow(home: &Home, rule: &HostRule) -> Result<()> {
        let mut cfg = Self::load(home)?;
        if !cfg.network.allow.contains(rule) {
            return Ok(());
        }
        cfg.network.allow.retain(|r| r != rule);
        cfg.save(home)
    }

    fn save(&self, home: &Home) -> Result<()> {
        let text = toml::to_string(self).context("encoding the config")?;
        let path = Self::path(home);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
    }

    /// The hosts `name` is sent to: the user's config, then the profile, then any built-in
    /// profile that knows it.
    pub fn secret_hosts(&self, name: &str, profile: Option<&Profile>) -> Option<Vec<HostRule>> {
        self.secrets
            .get(name)
            .map(|s| s.hosts.clone())
            .or_else(|| profile.and_then(|p| p.secret_hosts.get(name).cloned()))
            .or_else(|| Profile::builtin_secret_hosts(name))
    }
}

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
    pub fn config(&self) -> Result<Option<HitlConfig>> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let mut cfg = HitlConfig::default();
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::invalid("config.toml: [hitl] threshold must be between 0 and 1"));
            }
            cfg.threshold = t;
        }
        if let Some(i) = self.idle_secs {
            if !(i.is_finite() && (0.5..=86400.0).contains(&i)) {
                return Err(Error::invalid("config.toml: [hitl] idle_secs must be between 0.5 and 86400"));
            }
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
    /// How long an idle runner stays before it exits (default 3s): a duration, `0` to leave at
    /// once. Whoever submits next starts it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linger: Option<String>,
}

pub const DEFAULT_MAX_TASKS: usize = 2;
pub const DEFAULT_RUNNER_LINGER: Duration = Duration::from_secs(3);

impl TaskSettings {
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or(DEFAULT_MAX_TASKS).clamp(1, 256)
    }

    pub fn linger(&self) -> Result<Duration> {
        match &self.linger {
            None => Ok(DEFAULT_RUNNER_LINGER),
            Some(s) => agentbox_core::parse_duration(s)
                .map(Duration::from_secs)
                .map_err(|e| Error::invalid(format!("[tasks] linger: {e}"))),
        }
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
