//! Subscription logins kept on the host: `agentbox login PROFILE` imports the person's own login
//! (the agent's credentials file, e.g. `~/.claude/.credentials.json`) into
//! `AGENTBOX_HOME/logins/PROFILE.json` (0600). Agents of the profile get the same document with
//! two placeholders where the tokens were; their proxy swaps the access token into requests to
//! the provider and the refresh token into token requests, and a refresh's new tokens are written
//! back here (see `agentbox_proxy::Login`), under a lock, for every agent of the login.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use agentbox_core::{token_url_parts, LoginBinding, Profile};
use agentbox_proxy::{TokenStore, Tokens};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::{Context, Result};
use crate::home::{private_dir, Home};
use crate::Error;

/// A login as kept on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    profile: String,
    /// The agent's credentials file, real tokens included.
    document: Value,
    /// JSON pointers to the tokens and the expiry in `document`.
    access: String,
    refresh: String,
    #[serde(default)]
    expires: Option<String>,
    /// Pointers to other secrets in `document`, left out of agents' copies.
    #[serde(default)]
    drop: Vec<String>,
    imported_from: String,
    /// When it was imported, and last refreshed (ms since the epoch).
    at: u64,
    #[serde(default)]
    refreshed_at: Option<u64>,
}

/// What `keys` and `login` show of a login (never a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginView {
    pub profile: String,
    pub imported_from: String,
    pub at: u64,
    pub refreshed_at: Option<u64>,
    /// When the access token expires, if the document says.
    pub expires_at: Option<u64>,
}

fn dir(home: &Home) -> PathBuf {
    home.root.join("logins")
}

fn path(home: &Home, profile: &str) -> PathBuf {
    dir(home).join(format!("{profile}.json"))
}

fn token_at<'d>(doc: &'d Value, pointer: &str) -> Option<&'d str> {
    doc.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn read(path: &Path) -> Result<Record> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| crate::err!("{} is damaged: {e}", path.display()))
}

fn write(path: &Path, rec: &Record) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(rec)?;
    crate::home::replace_private_file(path, |f| f.write_all(&bytes))
}

/// Imports the person's login of `profile` from `from` (default: the profile's credentials file
/// in the caller's home). Refused when the file holds no access and refresh token.
pub fn import(home: &Home, profile: &str, from: Option<&Path>) -> Result<LoginView> {
    let p: Profile = crate::profiles::load(home, profile)?;
    let Some(spec) = p.login.clone() else {
        return Err(Error::invalid(format!(
            "profile '{profile}' has no subscription login ([login] in the profile); store a key instead \
             (agentbox env set KEY)"
        )));
    };
    let source = match from {
        Some(f) => f.to_path_buf(),
        None => {
            let home_dir = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set")?;
            crate::profiles::map_path(&spec.file, &home_dir).0
        }
    };
    let text = std::fs::read(&source).map_err(|e| {
        Error::invalid(format!(
            "no login to import at {} ({e}): log in with the agent on this machine first, or name the \
             file with --from",
            source.display()
        ))
    })?;
    let document: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("{} is not JSON: {e}", source.display())))?;
    for (what, pointer) in [("access token", &spec.access), ("refresh token", &spec.refresh)] {
        if token_at(&document, pointer).is_none() {
            return Err(Error::invalid(format!(
                "{} has no {what} at {pointer}: is it {}'s login file?",
                source.display(),
                p.name
            )));
        }
    }
    private_dir(&dir(home))?;
    let rec = Record {
        profile: p.name.clone(),
        document,
        access: spec.access,
        refresh: spec.refresh,
        expires: spec.expires,
        drop: spec.drop,
        imported_from: source.display().to_string(),
        at: agentbox_proxy::now_ms(),
        refreshed_at: None,
    };
    write(&path(home, &p.name), &rec)?;
    Ok(view(&rec))
}

fn view(rec: &Record) -> LoginView {
    LoginView {
        profile: rec.profile.clone(),
        imported_from: rec.imported_from.clone(),
        at: rec.at,
        refreshed_at: rec.refreshed_at,
        expires_at: rec.expires.as_deref().and_then(|p| rec.document.pointer(p)).and_then(Value::as_u64),
    }
}

/// The stored login of `profile`, if there is one.
pub fn status(home: &Home, profile: &str) -> Option<LoginView> {
    read(&path(home, profile)).ok().map(|r| view(&r))
}

pub fn remove(home: &Home, profile: &str) -> Result<()> {
    agentbox_core::validate_name(profile)?;
    match std::fs::remove_file(path(home, profile)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::not_found(format!("no login is stored for {profile} (see `agentbox keys`)")))
        }
        Err(e) => Err(e).context("removing the login"),
    }
}

/// The binding an agent of `profile` gets when a login of it is stored: fresh placeholders.
pub fn binding(home: &Home, profile: &Profile) -> Result<Option<LoginBinding>> {
    let Some(spec) = &profile.login else { return Ok(None) };
    if status(home, &profile.name).is_none() {
        return Ok(None);
    }
    let token_endpoints = spec
        .token_urls
        .iter()
        .map(|u| token_url_parts(u).map_err(|e| Error::invalid(format!("profile {}: {e}", profile.name))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(LoginBinding {
        login: profile.name.clone(),
        hosts: spec.hosts.clone(),
        access_placeholder: crate::egress::placeholder(&format!("{}_ACCESS", profile.name)),
        refresh_placeholder: crate::egress::placeholder(&format!("{}_REFRESH", profile.name)),
        token_endpoints,
    }))
}

/// The credentials document the agent of `binding` gets: the stored one, its tokens replaced by
/// the placeholders and the other secrets it names (`drop`) left out.
pub fn agent_document(home: &Home, binding: &LoginBinding) -> Result<String> {
    let rec = read(&path(home, &binding.login))?;
    let mut doc = rec.document.clone();
    for pointer in &rec.drop {
        remove_at(&mut doc, pointer);
    }
    for (pointer, ph) in
        [(&rec.access, &binding.access_placeholder), (&rec.refresh, &binding.refresh_placeholder)]
    {
        if let Some(v) = doc.pointer_mut(pointer) {
            *v = Value::String(ph.clone());
        }
    }
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// Removes what `pointer` (RFC 6901) names from `doc`, if it is there.
fn remove_at(doc: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let key = last.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&key);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// The tokens of one stored login, read at each use and updated under a lock.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(home: &Home, login: &str) -> Self {
        Self { path: path(home, login) }
    }

    fn lock(&self) -> std::result::Result<Flock<std::fs::File>, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path.with_extension("lock"))
            .map_err(|e| format!("locking the login: {e}"))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| format!("locking the login: {e}"))
    }
}

impl TokenStore for FileStore {
    fn current(&self) -> std::result::Result<Tokens, String> {
        let rec = read(&self.path).map_err(|e| format!("{e} (import it again: agentbox login)"))?;
        let get = |p: &str| {
            token_at(&rec.document, p)
                .map(|t| Zeroizing::new(t.to_string()))
                .ok_or_else(|| format!("the stored login has no token at {p}"))
        };
        Ok(Tokens { access: get(&rec.access)?, refresh: get(&rec.refresh)? })
    }

    fn refreshed(
        &self,
        access: Option<&str>,
        refresh: Option<&str>,
        expires_in: Option<u64>,
    ) -> std::result::Result<(), String> {
        let _held = self.lock()?;
        let mut rec = read(&self.path).map_err(|e| e.to_string())?;
        let now = agentbox_proxy::now_ms();
        for (pointer, value) in [(rec.access.clone(), access), (rec.refresh.clone(), refresh)] {
            if let (Some(v), Some(slot)) = (value, rec.document.pointer_mut(&pointer)) {
                *slot = Value::String(v.to_string());
            }
        }
        if let (Some(secs), Some(pointer)) = (expires_in, rec.expires.clone()) {
            if let Some(slot) = rec.document.pointer_mut(&pointer) {
                *slot = Value::from(now.saturating_add(secs.saturating_mul(1000)));
            }
        }
        rec.refreshed_at = Some(now);
        write(&self.path, &rec).map_err(|e| e.to_string())
    }
}
