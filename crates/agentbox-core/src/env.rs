use crate::SpecError;

/// Host variables that pass into a sandbox unless the caller says otherwise. Everything else in the
/// caller's environment (tokens, keys, SSH_AUTH_SOCK, DBUS addresses, ...) is dropped: a sandbox
/// starts from an empty environment. Locale variables `LC_*` pass as a family.
pub const ENV_ALLOWLIST: &[&str] =
    &["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "CLICOLOR_FORCE"];

/// PATH inside the sandbox. Host PATH entries often point into the home directory, which is hidden.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A `--env` argument.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnvArg {
    /// `KEY=VALUE`: set explicitly.
    Set(String, String),
    /// `KEY`: pass the caller's value (an explicit opt-in, like `docker run -e KEY`).
    Inherit(String),
}

pub fn is_valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub fn parse_env_arg(input: &str) -> Result<EnvArg, SpecError> {
    let (key, value) = match input.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (input, None),
    };
    if !is_valid_env_key(key) || value.is_some_and(|v| v.contains('\0')) {
        return Err(SpecError::EnvSyntax(input.to_string()));
    }
    Ok(match value {
        Some(v) => EnvArg::Set(key.to_string(), v.to_string()),
        None => EnvArg::Inherit(key.to_string()),
    })
}

fn is_allowlisted(key: &str) -> bool {
    ENV_ALLOWLIST.contains(&key) || (key.starts_with("LC_") && is_valid_env_key(key))
}

/// Sets `key` in `env`, replacing an earlier value.
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// The environment a sandbox starts with: agentbox's own variables, then the allowlisted ones the
/// caller has, then the `--env` arguments (which win). `host` is the caller's environment.
pub fn default_env(
    home: &str,
    host: &[(String, String)],
    args: &[EnvArg],
) -> Result<Vec<(String, String)>, SpecError> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), SANDBOX_PATH.into()),
        ("HOME".into(), home.into()),
        ("USER".into(), "agent".into()),
        ("LOGNAME".into(), "agent".into()),
        ("SHELL".into(), "/bin/sh".into()),
        ("AGENTBOX".into(), "1".into()),
    ];
    let mut set = |key: &str, value: &str| set_env(&mut env, key, value);
    for (k, v) in host.iter().filter(|(k, _)| is_allowlisted(k)) {
        set(k, v);
    }
    for arg in args {
        match arg {
            EnvArg::Set(k, v) => set(k, v),
            EnvArg::Inherit(k) => {
                let (_, v) =
                    host.iter().find(|(hk, _)| hk == k).ok_or_else(|| SpecError::EnvUnset(k.clone()))?;
                set(k, v);
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(String, String)> {
        [
            ("TERM", "xterm"),
            ("LC_TIME", "C"),
            ("ANTHROPIC_API_KEY", "sk-secret"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-x/agent.1"),
            ("PATH", "/home/u/bin:/usr/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn secrets_never_pass_by_default() {
        let env = default_env("/home/agent", &host(), &[]).unwrap();
        assert_eq!(get(&env, "TERM"), Some("xterm"));
        assert_eq!(get(&env, "LC_TIME"), Some("C"));
        assert_eq!(get(&env, "ANTHROPIC_API_KEY"), None);
        assert_eq!(get(&env, "SSH_AUTH_SOCK"), None);
        assert_eq!(get(&env, "PATH"), Some(SANDBOX_PATH));
        assert_eq!(get(&env, "HOME"), Some("/home/agent"));
    }

    #[test]
    fn explicit_args_win() {
        let args = [parse_env_arg("FOO=a=b").unwrap(), parse_env_arg("ANTHROPIC_API_KEY").unwrap()];
        let env = default_env("/h", &host(), &args).unwrap();
        assert_eq!(get(&env, "FOO"), Some("a=b"));
        assert_eq!(get(&env, "ANTHROPIC_API_KEY"), Some("sk-secret"));
        let missing = [parse_env_arg("NOPE").unwrap()];
        assert_eq!(default_env("/h", &host(), &missing), Err(SpecError::EnvUnset("NOPE".into())));
    }

    #[test]
    fn key_syntax() {
        for bad in ["", "=x", "1A=b", "A-B=c", "A B"] {
            assert!(parse_env_arg(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_env_arg("A_1=").unwrap(), EnvArg::Set("A_1".into(), String::new()));
    }
}
