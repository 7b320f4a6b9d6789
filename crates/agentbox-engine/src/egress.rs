//! Network policy and credentials of `proxy`-mode sandboxes, on the host side: the user's config
//! (`AGENTBOX_HOME/config.toml`), the local CA's files, placeholders, and the proxy's
//! configuration with the real secret values (loaded only after the sandbox was started).
//!
//! ```toml
//! [network]
//! allow = ["registry.npmjs.org", "*.pythonhosted.org"]   # every proxy-mode sandbox
//! ask_timeout = 30                                        # seconds a request waits with --ask
//!
//! [secrets.GITHUB_TOKEN]
//! hosts = ["github.com", "api.github.com"]                # where this secret may be sent
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::{Context, Result};
use agentbox_core::{default_auth_headers, EgressRequest, EgressSpec, HostRule, Profile, SecretBinding};
use agentbox_jail::{CaFiles, SYSTEM_CA_BUNDLES};
use agentbox_proxy::{Audit, Credential, LocalCa, Login, ProxyConfig, Resolver};
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::home::Home;
use crate::secrets::Secrets;

/// A fresh placeholder for `env`: unique, and recognisable in logs.
pub fn placeholder(env: &str) -> String {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("agentbox-placeholder-{}-{hex}", env.to_ascii_lowercase().replace('_', "-"))
}

/// Whether `name` has a value on this host (the caller's environment or `agentbox env`). The
/// value itself is dropped at once, zeroed.
pub fn secret_present(name: &str, secrets: &Secrets) -> bool {
    let from_env = std::env::var_os(name).map(|v| Zeroizing::new(v.into_encoded_bytes()));
    from_env.is_some_and(|v| !v.is_empty()) || secrets.get(name).is_some()
}

/// The egress spec of a sandbox: the allowlists of the config, the profile and the flags, and a
/// binding with a new placeholder for each secret (those the profile finds, and `--secret`).
pub fn build_spec(
    cfg: &Config,
    profile: Option<&Profile>,
    found: &[String],
    flags: &EgressRequest,
) -> Result<EgressSpec> {
    let mut allow: Vec<HostRule> = Vec::new();
    let lists = [&cfg.network.allow, &flags.allow];
    for rule in lists.into_iter().flatten().chain(profile.map(|p| p.allow.iter()).into_iter().flatten()) {
        if !allow.contains(rule) {
            allow.push(rule.clone());
        }
    }
    let mut secrets: Vec<SecretBinding> = Vec::new();
    let named = found.iter().map(|n| (n.clone(), None)).chain(flags.secrets.iter().cloned());
    for (name, hosts) in named {
        let hosts = match hosts.or_else(|| cfg.secret_hosts(&name, profile)) {
            Some(h) => h,
            None => bail!(crate::Error::invalid(format!(
                "no hosts are known for secret {name}: name them with --secret {name}=HOST[,HOST], \
                 in [secrets.{name}] of the config, or in [secret_hosts] of the profile"
            ))
            .for_field(agentbox_core::Field::Secrets)),
        };
        let headers = cfg
            .secrets
            .get(&name)
            .map(|s| s.headers.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| profile.and_then(|p| p.secret_headers.get(&name).cloned()))
            .unwrap_or_else(|| default_auth_headers(&name));
        secrets.retain(|s| s.env != name);
        secrets.push(SecretBinding { placeholder: placeholder(&name), env: name, hosts, headers });
    }
    Ok(EgressSpec { allow, secrets, logins: Vec::new(), ask: flags.ask })
}

/// Checks that every `--secret` has a value now, so a typo fails before anything starts.
pub fn check_flag_secrets(flags: &EgressRequest, secrets: &Secrets) -> Result<()> {
    for (name, _) in &flags.secrets {
        if !secret_present(name, secrets) {
            bail!(crate::Error::invalid(format!(
                "{name} is not set in the environment nor stored (agentbox env set {name} ...)"
            )));
        }
    }
    Ok(())
}

fn ca_dir(home: &Home) -> PathBuf {
    home.root.join("ca")
}

/// The local CA's certificate and a trust bundle (the host's bundle plus the CA), created on
/// first use; the bundle is rewritten when the host's changes.
pub fn ca_files(home: &Home) -> Result<CaFiles> {
    let dir = ca_dir(home);
    let ca = LocalCa::load_or_create(&dir)?;
    let system = SYSTEM_CA_BUNDLES.iter().find_map(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let mut bundle = system;
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca.cert_pem());
    let path = dir.join("bundle.pem");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(bundle.as_str()) {
        let tmp = dir.join(format!(".bundle.pem.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bundle.as_bytes())?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(CaFiles { cert: agentbox_proxy::cert_path(&dir), bundle: path })
}

/// The real value of each secret in `spec`. Call only after the sandbox was started.
pub fn load_credentials(home: &Home, spec: &EgressSpec) -> Result<Vec<Credential>> {
    if spec.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let stored = Secrets::load(home)?;
    let mut out = Vec::new();
    for b in &spec.secrets {
        let value = match std::env::var(&b.env).ok().filter(|v| !v.is_empty()) {
            Some(v) => Zeroizing::new(v),
            None => match stored.get(&b.env) {
                Some(v) => Zeroizing::new(v.to_string()),
                None => bail!("secret {} is no longer set (agentbox env set {} ...)", b.env, b.env),
            },
        };
        out.push(Credential {
            env: b.env.clone(),
            placeholder: b.placeholder.clone(),
            value,
            hosts: b.hosts.clone(),
            headers: b.auth_headers(),
        });
    }
    Ok(out)
}

/// Everything the proxy of agent `agent` needs; `audit_file` None prints refusals instead.
pub fn proxy_config(
    home: &Home,
    agent: &str,
    spec: &EgressSpec,
    audit_file: Option<&Path>,
) -> Result<ProxyConfig> {
    let cfg = Config::load(home)?;
    let credentials = load_credentials(home, spec)?;
    let logins: Vec<Login> = spec
        .logins
        .iter()
        .map(|b| Login {
            binding: b.clone(),
            store: std::sync::Arc::new(crate::logins::FileStore::new(home, &b.login)),
        })
        .collect();
    let intercepts = !(credentials.is_empty() && logins.is_empty());
    let ca = if intercepts { Some(LocalCa::load_or_create(&ca_dir(home))?) } else { None };
    let audit = match audit_file {
        Some(p) => Audit::to_file(p).with_context(|| format!("opening {}", p.display()))?,
        None => Audit::to_stderr(),
    };
    Ok(ProxyConfig {
        agent: agent.to_string(),
        egress: spec.clone(),
        credentials,
        logins,
        ca,
        resolver: Resolver::with_pins(&cfg.network.resolve)?,
        audit,
        ask_timeout: cfg.ask_timeout(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_unique_and_named() {
        let a = placeholder("ANTHROPIC_API_KEY");
        assert!(a.starts_with("agentbox-placeholder-anthropic-api-key-"), "{a}");
        assert_ne!(a, placeholder("ANTHROPIC_API_KEY"));
    }

    #[test]
    fn spec_merges_config_profile_and_flags() {
        let cfg: Config = toml::from_str(
            "[network]\nallow = [\"registry.npmjs.org\"]\n[secrets.GITHUB_TOKEN]\nhosts = [\"github.com\"]\n",
        )
        .unwrap();
        let profile = Profile::builtin("claude-code").unwrap().unwrap();
        let flags = EgressRequest {
            allow: vec!["*.example.org".parse().unwrap()],
            secrets: vec![("GITHUB_TOKEN".into(), None)],
            ask: true,
        };
        let spec = build_spec(&cfg, Some(&profile), &["ANTHROPIC_API_KEY".into()], &flags).unwrap();
        let allow: Vec<String> = spec.allow.iter().map(|r| r.to_string()).collect();
        assert!(allow.contains(&"registry.npmjs.org".into()) && allow.contains(&"*.example.org".into()));
        assert!(allow.contains(&"claude.ai".into()), "{allow:?}");
        let hosts = |n: &str| spec.secrets.iter().find(|s| s.env == n).unwrap().hosts.clone();
        assert_eq!(hosts("ANTHROPIC_API_KEY"), vec![HostRule::exact("api.anthropic.com")]);
        assert_eq!(hosts("GITHUB_TOKEN"), vec![HostRule::exact("github.com")]);
        assert!(spec.ask);

        let unknown = EgressRequest { secrets: vec![("MY_TOKEN".into(), None)], ..Default::default() };
        let e = build_spec(&Config::default(), None, &[], &unknown).unwrap_err().to_string();
        assert!(e.contains("--secret MY_TOKEN=HOST"), "{e}");
    }

    #[test]
    fn config_errors_name_the_file() {
        assert!(toml::from_str::<Config>("[network]\nallow = [\"*\"]\n").is_err());
        assert!(toml::from_str::<Config>("[network]\nbogus = 1\n").is_err());
        assert!(toml::from_str::<Config>("[secrets.X]\nhosts = [\"10.0.0.1\"]\n").is_ok());
    }
}
