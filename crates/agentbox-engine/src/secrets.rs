//! The host-side secrets file behind `agentbox env`: `AGENTBOX_HOME/secrets.env`, mode 0600,
//! one `KEY=VALUE` per line. Profiles look credentials up here after the caller's environment.
//! Nothing of this file is visible inside a sandbox; a value reaches an agent only when its profile
//! names the variable.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::bail;
use crate::error::{Context, Result};
use agentbox_core::is_valid_env_key;

use crate::home::Home;

#[derive(Debug)]
pub struct Secrets {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl Secrets {
    pub fn path(home: &Home) -> PathBuf {
        home.root.join("secrets.env")
    }

    pub fn load(home: &Home) -> Result<Self> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.permissions().mode() & 0o077 != 0 {
                bail!("{} is readable by others; fix it with: chmod 600 {}", path.display(), path.display());
            }
        }
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if is_valid_env_key(k) => entries.push((k.to_string(), v.to_string())),
                _ => bail!("{}:{}: expected KEY=VALUE", path.display(), i + 1),
            }
        }
        Ok(Self { path, entries })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !is_valid_env_key(key) {
            bail!("invalid variable name '{key}': letters, digits and '_', not starting with a digit");
        }
        if value.contains('\n') || value.contains('\0') {
            bail!("the value of {key} contains a newline or NUL byte");
        }
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
        self.save()
    }

    /// Removes `key`; false if it was not set.
    pub fn unset(&mut self, key: &str) -> Result<bool> {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        if self.entries.len() == before {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Writes a new file (0600 from the start) and renames it over the old one.
    fn save(&self) -> Result<()> {
        crate::home::replace_private_file(&self.path, |f| {
            for (k, v) in &self.entries {
                writeln!(f, "{k}={v}")?;
            }
            Ok(())
        })
    }
}
