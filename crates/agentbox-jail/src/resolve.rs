//! Request -> canonical spec: the I/O half of validation (paths that must exist, the caller's home
//! and environment). The rules themselves live in `agentbox-core`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_core::{
    check_mount_target, check_workspace, default_env, format_size, normalize_absolute, set_env,
    validate_hostname, Backend, EgressSpec, EnvArg, HomeSpec, Limits, MountArg, MountSpec, NetworkMode,
    SandboxSpec, SpecError, DEFAULT_GID, DEFAULT_HOSTNAME, DEFAULT_UID, PROXY_PORT, SANDBOX_HOME,
    VM_MIN_MEMORY,
};

use crate::JailError;

/// What a caller asks for, before any path is resolved.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    pub command: Vec<OsString>,
    /// Defaults to the caller's current directory.
    pub workspace: Option<PathBuf>,
    /// Inside the sandbox; relative paths are taken from the workspace.
    pub workdir: Option<PathBuf>,
    pub mounts: Vec<MountArg>,
    pub network: NetworkMode,
    pub env: Vec<EnvArg>,
    pub limits: Limits,
    pub hostname: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub timeout: Option<Duration>,
    /// Defaults to a private tmpfs.
    pub home: Option<HomeSpec>,
    /// Sandbox paths to cover (absolute).
    pub hidden: Vec<PathBuf>,
    /// The egress policy (`proxy` mode only).
    pub egress: EgressSpec,
    /// The local CA the proxy intercepts with, to be trusted inside (`proxy` mode).
    pub ca: Option<CaFiles>,
    pub backend: Backend,
}

/// Host files of the local CA: its certificate, and the system bundle with it appended.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub bundle: PathBuf,
}

/// Where the CA files appear inside a sandbox.
pub const SANDBOX_CA_CERT: &str = "/run/agentbox/ca.crt";
pub const SANDBOX_CA_BUNDLE: &str = "/run/agentbox/ca-bundle.crt";

/// System trust bundles of the common distributions; those present on the host are covered by
/// the bundle that includes the local CA, so programs that ignore the variables trust it too.
pub const SYSTEM_CA_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// What a `proxy`-mode sandbox gets: proxy variables pointing at its own loopback, the CA's
/// files and the variables that make common runtimes trust it, and a placeholder per secret.
fn add_proxy_setup(
    env: &mut Vec<(String, String)>,
    mounts: &mut Vec<MountSpec>,
    egress: &EgressSpec,
    ca: Option<&CaFiles>,
) {
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        set_env(env, k, &url);
    }
    for k in ["NO_PROXY", "no_proxy"] {
        set_env(env, k, "localhost,127.0.0.1,::1");
    }
    // Node's built-in fetch follows the proxy variables only when told to (Node 22.18+/24+).
    set_env(env, "NODE_USE_ENV_PROXY", "1");
    if let Some(ca) = ca {
        mounts.push(MountSpec { source: ca.cert.clone(), target: SANDBOX_CA_CERT.into(), writable: false });
        mounts.push(MountSpec {
            source: ca.bundle.clone(),
            target: SANDBOX_CA_BUNDLE.into(),
            writable: false,
        });
        for system in SYSTEM_CA_BUNDLES {
            let is_file = std::fs::symlink_metadata(system).map(|m| m.is_file()).unwrap_or(false);
            if is_file {
                mounts.push(MountSpec { source: ca.bundle.clone(), target: system.into(), writable: false });
            }
        }
        for k in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"] {
            set_env(env, k, SANDBOX_CA_BUNDLE);
        }
        set_env(env, "NODE_EXTRA_CA_CERTS", SANDBOX_CA_CERT);
    }
    for s in &egress.secrets {
        set_env(env, &s.env, &s.placeholder);
    }
}

/// The facts about the caller that resolution needs.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub cwd: PathBuf,
    /// Every path that is the caller's home: $HOME and the passwd entry (both canonical).
    pub homes: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl HostContext {
    pub fn current() -> Result<Self, JailError> {
        let cwd =
            std::env::current_dir().map_err(|source| JailError::Io { what: "current directory", source })?;
        let mut homes = Vec::new();
        if let Some(h) = std::env::var_os("HOME") {
            homes.push(PathBuf::from(h));
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if let Some(home) = passwd_home(&passwd, nix::unistd::getuid().as_raw()) {
            homes.push(home);
        }
        let homes = homes
            .into_iter()
            .filter(|h| h.is_absolute())
            .map(|h| std::fs::canonicalize(&h).unwrap_or(h))
            .collect();
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(Self { cwd, homes, env })
    }

    fn check(&self, check: impl Fn(Option<&Path>) -> Result<(), SpecError>) -> Result<(), SpecError> {
        if self.homes.is_empty() {
            return check(None);
        }
        self.homes.iter().try_for_each(|h| check(Some(h)))
    }
}

/// The caller's environment may hold secrets; the copy is wiped when the context goes, so a
/// sandbox cloned afterwards does not inherit it in freed memory.
impl Drop for HostContext {
    fn drop(&mut self) {
        for (_, value) in &mut self.env {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// The home directory of `uid` in passwd(5) text. agentbox is a static binary, so it reads the
/// file itself instead of going through NSS.
fn passwd_home(passwd: &str, uid: u32) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid)).then(|| PathBuf::from(f[5]))
    })
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Resolves and validates a request into the canonical spec.
pub fn resolve(req: SandboxRequest, host: &HostContext) -> Result<SandboxSpec, JailError> {
    if req.command.is_empty() {
        return Err(SpecError::NoCommand.into());
    }
    if req.backend == Backend::Vm {
        check_vm(&req)?;
    }
    let ws_arg = req.workspace.unwrap_or_else(|| host.cwd.clone());
    let ws_abs = absolute(&host.cwd, &ws_arg);
    let workspace = std::fs::canonicalize(&ws_abs)
        .map_err(|source| JailError::Workspace { path: ws_abs.clone(), source })?;
    if !workspace.is_dir() {
        return Err(JailError::Workspace {
            path: workspace,
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    host.check(|home| check_workspace(&workspace, home))?;

    let workdir = match req.workdir {
        Some(w) => normalize_absolute(&absolute(&workspace, &w))?,
        None => workspace.clone(),
    };

    let mut mounts = Vec::with_capacity(req.mounts.len());
    for m in req.mounts {
        let abs = absolute(&host.cwd, &m.source);
        let source =
            std::fs::canonicalize(&abs).map_err(|source| JailError::MountSource { path: abs, source })?;
        let target = normalize_absolute(m.target.as_deref().unwrap_or(&source))?;
        host.check(|home| check_mount_target(&source, &target, m.writable, home))?;
        mounts.push(MountSpec { source, target, writable: m.writable });
    }

    let hostname = req.hostname.unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
    validate_hostname(&hostname)?;
    let mut env = default_env(SANDBOX_HOME, &host.env, &req.env)?;
    let egress = if req.network == NetworkMode::Proxy {
        if !req.egress.secrets.is_empty() && req.ca.is_none() {
            return Err(SpecError::EgressWithoutProxy("secrets need the local CA").into());
        }
        add_proxy_setup(&mut env, &mut mounts, &req.egress, req.ca.as_ref());
        req.egress
    } else if req.egress != EgressSpec::default() {
        return Err(SpecError::EgressWithoutProxy("--allow, --secret and --ask need --network proxy").into());
    } else {
        EgressSpec::default()
    };

    Ok(SandboxSpec {
        command: req.command,
        workspace,
        overlay: None,
        publish: Vec::new(),
        pause_after: None,
        workdir,
        mounts,
        network: req.network,
        egress,
        env,
        limits: req.limits,
        hostname,
        uid: req.uid.unwrap_or(DEFAULT_UID),
        gid: req.gid.unwrap_or(DEFAULT_GID),
        home: req.home.unwrap_or(HomeSpec::Tmpfs),
        timeout: req.timeout,
        hidden: req.hidden.iter().map(|p| normalize_absolute(p)).collect::<Result<_, _>>()?,
        backend: req.backend,
        version: agentbox_core::SPEC_VERSION,
    })
}

/// What a virtual machine cannot honour, refused before anything is created.
fn check_vm(req: &SandboxRequest) -> Result<(), SpecError> {
    let bad = |msg: String| Err(SpecError::Backend(msg));
    if req.network == NetworkMode::Full {
        return bad("--backend vm takes --network none or proxy: the guest's only way out is the \
                    egress proxy (use --network proxy with --allow HOST)"
            .into());
    }
    if let Some(m) = req.limits.memory {
        if m < VM_MIN_MEMORY {
            return bad(format!(
                "--memory {} is too small for a virtual machine: give at least {}",
                format_size(m),
                format_size(VM_MIN_MEMORY)
            ));
        }
    }
    if let Some(c) = req.limits.cpus {
        if c > 64.0 {
            return bad(format!("--cpus {c} is more virtual CPUs than a guest gets (at most 64)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(cwd: &Path, home: &Path) -> HostContext {
        HostContext {
            cwd: cwd.into(),
            homes: vec![home.into()],
            env: vec![("SECRET_TOKEN".into(), "x".into())],
        }
    }

    fn req(cmd: &str) -> SandboxRequest {
        SandboxRequest { command: vec![cmd.into()], ..Default::default() }
    }

    #[test]
    fn defaults_to_cwd_and_refuses_home() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("proj");
        std::fs::create_dir(&ws).unwrap();
        let home = std::fs::canonicalize(dir.path()).unwrap();
        let spec = resolve(req("true"), &host(&ws, &home)).unwrap();
        assert_eq!(spec.workspace, std::fs::canonicalize(&ws).unwrap());
        assert_eq!(spec.workdir, spec.workspace);
        assert!(!spec.env.iter().any(|(k, _)| k == "SECRET_TOKEN"));

        let err = resolve(req("true"), &host(&home, &home)).unwrap_err();
        assert!(err.to_string().contains("home directory"), "{err}");
        let err = resolve(req("true"), &host(&home, &home.join("proj"))).unwrap_err();
        assert!(err.to_string().contains("contains your home"), "{err}");
    }

    #[test]
    fn missing_paths_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = req("true");
        r.workspace = Some(dir.path().join("nope"));
        let err = resolve(r, &host(dir.path(), Path::new("/home/x"))).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let mut r = req("true");
        r.mounts = vec![MountArg { source: "missing".into(), target: None, writable: false }];
        let err = resolve(r, &host(dir.path(), Path::new("/home/x"))).unwrap_err();
        assert!(err.to_string().contains("--mount source"), "{err}");
        assert!(matches!(
            resolve(SandboxRequest::default(), &host(dir.path(), Path::new("/h"))),
            Err(JailError::Spec(SpecError::NoCommand))
        ));
    }

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad line\n";
        assert_eq!(passwd_home(text, 0), Some(PathBuf::from("/root")));
        assert_eq!(passwd_home(text, 65534), Some(PathBuf::from("/nonexistent")));
        assert_eq!(passwd_home(text, 1000), None);
    }

    #[test]
    fn relative_workdir_is_inside_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = req("true");
        r.workdir = Some("sub/dir".into());
        let spec = resolve(r, &host(dir.path(), Path::new("/home/x"))).unwrap();
        assert_eq!(spec.workdir, spec.workspace.join("sub/dir"));
    }

    #[test]
    fn proxy_mode_gets_placeholders_and_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaFiles { cert: dir.path().join("ca.crt"), bundle: dir.path().join("bundle.pem") };
        std::fs::write(&ca.cert, "c").unwrap();
        std::fs::write(&ca.bundle, "b").unwrap();
        let egress = EgressSpec {
            allow: vec!["*.example.org".parse().unwrap()],
            secrets: vec![agentbox_core::SecretBinding {
                env: "API_KEY".into(),
                hosts: vec!["api.example.com".parse().unwrap()],
                placeholder: "agentbox-placeholder-x".into(),
                headers: vec![],
            }],
            logins: vec![],
            ask: false,
        };
        let mut r = req("true");
        r.network = NetworkMode::Proxy;
        r.egress = egress.clone();
        r.env = vec![EnvArg::Set("API_KEY".into(), "real".into())];
        r.ca = Some(ca.clone());
        let spec = resolve(r, &host(dir.path(), Path::new("/home/x"))).unwrap();
        let get = |k: &str| spec.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("API_KEY").as_deref(), Some("agentbox-placeholder-x"), "the placeholder wins");
        assert_eq!(get("HTTPS_PROXY").as_deref(), Some("http://127.0.0.1:3128"));
        assert_eq!(get("SSL_CERT_FILE").as_deref(), Some(SANDBOX_CA_BUNDLE));
        assert_eq!(get("NODE_EXTRA_CA_CERTS").as_deref(), Some(SANDBOX_CA_CERT));
        assert!(spec.mounts.iter().any(|m| m.target == Path::new(SANDBOX_CA_CERT) && !m.writable));
        assert_eq!(spec.egress, egress);

        // Secrets without the CA, and a policy without proxy mode, are refused.
        let mut r = req("true");
        r.network = NetworkMode::Proxy;
        r.egress = egress.clone();
        assert!(resolve(r, &host(dir.path(), Path::new("/home/x"))).is_err());
        let mut r = req("true");
        r.egress = egress;
        let e = resolve(r, &host(dir.path(), Path::new("/home/x"))).unwrap_err().to_string();
        assert!(e.contains("--network proxy"), "{e}");
    }
}
