//! Per-agent identity: an Ed25519 key the agent signs its git commits with.
//!
//! The private key lives in the agent's own home (`~/.ssh/agentbox_ed25519`, 0600) so git inside
//! the sandbox can sign; git is configured through `GIT_CONFIG_*` variables to sign every commit
//! and tag with it (SSH signatures, verified by `ssh-keygen -Y`). The public key is also kept in
//! the agent's state directory, where the agent cannot replace it: `verify` trusts only that copy.
//! The identity is shown as a `did:key` (multicodec ed25519-pub, base58btc).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use agentbox_core::{EnvArg, SANDBOX_HOME};
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use crate::home::private_dir;

pub const PUBLIC_FILE: &str = "identity.pub";
pub const SIGNERS_FILE: &str = "allowed_signers";
pub const BASE_FILE: &str = "identity.base";
const KEY_IN_HOME: &str = ".ssh/agentbox_ed25519";

pub fn email(name: &str) -> String {
    format!("{name}@agentbox.local")
}

/// `did:key:z...` of an Ed25519 public key.
pub fn did_key(key: &[u8; 32]) -> String {
    let mut bytes = vec![0xed, 0x01];
    bytes.extend_from_slice(key);
    format!("did:key:z{}", bs58::encode(bytes).into_string())
}

fn did_of_public(p: &PublicKey) -> Option<String> {
    p.key_data().ed25519().map(|k| did_key(&k.0))
}

/// Creates the agent's key pair; returns its did:key.
pub fn create(state_dir: &Path, agent_home: &Path, name: &str) -> Result<String> {
    let mut key =
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).context("generating the key")?;
    key.set_comment(email(name));
    let private = key.to_openssh(LineEnding::LF).context("encoding the key")?;
    let public = key.public_key().to_openssh().context("encoding the public key")?;
    let ssh = agent_home.join(".ssh");
    private_dir(&ssh)?;
    let key_path = agent_home.join(KEY_IN_HOME);
    std::fs::write(&key_path, private.as_bytes())?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(key_path.with_extension("pub"), format!("{public}\n"))?;
    std::fs::write(state_dir.join(PUBLIC_FILE), format!("{public}\n"))?;
    let signers = format!("{} namespaces=\"git\" {public}\n", email(name));
    std::fs::write(state_dir.join(SIGNERS_FILE), &signers)?;
    // For the agent's own `git log --show-signature`; `verify` uses only the host-side copy.
    std::fs::write(ssh.join("agentbox_allowed_signers"), &signers)?;
    did_of_public(key.public_key()).context("not an Ed25519 key")
}

/// The agent's did:key, from the host-side copy of its public key.
pub fn did(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(PUBLIC_FILE)).ok()?;
    did_of_public(&PublicKey::from_openssh(text.trim()).ok()?)
}

/// Git configuration for the sandbox: sign every commit and tag with the agent's key.
pub fn git_env(name: &str) -> Vec<EnvArg> {
    let signing_key = PathBuf::from(SANDBOX_HOME).join(KEY_IN_HOME).with_extension("pub");
    let settings = [
        ("gpg.format", "ssh".to_string()),
        ("user.signingkey", signing_key.to_string_lossy().into_owned()),
        ("commit.gpgsign", "true".to_string()),
        ("tag.gpgsign", "true".to_string()),
        ("user.name", name.to_string()),
        ("user.email", email(name)),
        ("gpg.ssh.allowedSignersFile", format!("{SANDBOX_HOME}/.ssh/agentbox_allowed_signers")),
    ];
    let mut env = vec![EnvArg::Set("GIT_CONFIG_COUNT".into(), settings.len().to_string())];
    for (i, (k, v)) in settings.into_iter().enumerate() {
        env.push(EnvArg::Set(format!("GIT_CONFIG_KEY_{i}"), k.to_string()));
        env.push(EnvArg::Set(format!("GIT_CONFIG_VALUE_{i}"), v));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_key_encoding() {
        // The all-zero key, checked against an independent base58btc encoding of 0xed01 || 0*32.
        let did = did_key(&[0u8; 32]);
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(did, "did:key:z6MkeTG3bFFSLYVU7VqhgZxqr6YzpaGrQtFMh1uvqGy1vDnP");
    }
}
