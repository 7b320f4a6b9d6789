//! Which server the CLI talks to, if any: `--server`, `--context NAME`, AGENTBOX_SERVER,
//! AGENTBOX_CONTEXT or the current context (`agentbox context use NAME`), in that order. The token
//! comes from AGENTBOX_TOKEN, the context's token file, or AGENTBOX_HOME/api-token (a server on
//! this machine writes it there).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentbox_engine::Home;
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::cli::{ContextArgs, ContextCommand};
use crate::remote::Remote;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedContext {
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

/// `AGENTBOX_HOME/contexts.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, SavedContext>,
}

impl Contexts {
    fn path(home: &Home) -> PathBuf {
        home.root.join("contexts.toml")
    }

    fn load(home: &Home) -> Result<Self> {
        let path = Self::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("{}: fix or remove it", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, home: &Home) -> Result<()> {
        let path = Self::path(home);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn check_url(url: &str) -> Result<String> {
    let u = url.trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
        bail!("invalid server URL '{url}': use http://HOST:PORT or https://HOST:PORT");
    }
    Ok(u.to_string())
}

pub fn context(args: ContextArgs) -> Result<i32> {
    let home = Home::open()?;
    let mut all = Contexts::load(&home)?;
    match args.command {
        ContextCommand::Add { name, url, token_file } => {
            agentbox_core::validate_name(&name)?;
            let server = check_url(&url)?;
            if let Some(f) = &token_file {
                anyhow::ensure!(f.is_file(), "--token-file {}: no such file", f.display());
            }
            all.contexts.insert(name.clone(), SavedContext { server, token_file });
            all.save(&home)?;
            println!("{name}");
        }
        ContextCommand::Use { name } => {
            if name == "none" {
                all.current = None;
            } else if all.contexts.contains_key(&name) {
                all.current = Some(name);
            } else {
                bail!("no context named '{name}' (see `agentbox context list`)");
            }
            all.save(&home)?;
        }
        ContextCommand::List => {
            for (name, c) in &all.contexts {
                let mark = if all.current.as_deref() == Some(name) { "*" } else { " " };
                println!("{mark} {name:<20} {}", c.server);
            }
        }
        ContextCommand::Rm { name } => {
            if all.contexts.remove(&name).is_none() {
                bail!("no context named '{name}'");
            }
            if all.current.as_deref() == Some(name.as_str()) {
                all.current = None;
            }
            all.save(&home)?;
        }
    }
    Ok(0)
}

/// The server the command line selects, if any.
pub fn selected(server: Option<String>, context: Option<String>) -> Result<Option<Remote>> {
    let home = Home::open()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (server, token_file) = if let Some(url) = server.or_else(|| env("AGENTBOX_SERVER")) {
        (url, None)
    } else {
        let all = Contexts::load(&home)?;
        let Some(name) = context.or_else(|| env("AGENTBOX_CONTEXT")).or(all.current.clone()) else {
            return Ok(None);
        };
        match all.contexts.get(&name) {
            Some(c) => (c.server.clone(), c.token_file.clone()),
            None => bail!("no context named '{name}' (see `agentbox context list`)"),
        }
    };
    let token = match env("AGENTBOX_TOKEN") {
        Some(t) => t,
        None => {
            let file = token_file.unwrap_or_else(|| agentbox_server::token_path(&home));
            std::fs::read_to_string(&file)
                .with_context(|| {
                    format!("reading the token from {} (or set AGENTBOX_TOKEN)", file.display())
                })?
                .trim()
                .to_string()
        }
    };
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .into();
    Ok(Some(Remote::new(check_url(&server)?, token, http)))
}
