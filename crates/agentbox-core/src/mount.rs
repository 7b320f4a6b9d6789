use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A `--mount` argument as the user wrote it: `HOST[:SANDBOX][:ro|rw]`.
///
/// HOST may be relative (it is resolved against the caller's directory); SANDBOX defaults to the
/// canonical HOST path. Mounts are read-write unless `:ro` is given, like docker's `-v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountArg {
    pub source: PathBuf,
    pub target: Option<PathBuf>,
    pub writable: bool,
}

/// A resolved bind mount: canonical host source, absolute sandbox target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

impl MountArg {
    /// The `HOST[:SANDBOX][:ro]` form, when it can express this mount (no ':' in either path, and
    /// both valid UTF-8); `parse_mount_arg` reads it back as the same value.
    pub fn to_arg(&self) -> Option<String> {
        let source = self.source.to_str().filter(|s| !s.is_empty() && !s.contains(':'))?;
        let target = match &self.target {
            Some(t) => Some(t.to_str().filter(|t| !t.contains(':'))?),
            None => None,
        };
        let mut out = source.to_string();
        if let Some(t) = target {
            out.push(':');
            out.push_str(t);
        }
        if !self.writable {
            out.push_str(":ro");
        }
        Some(out)
    }
}

/// Parses `HOST[:SANDBOX][:ro|rw]`. Paths that contain ':' cannot be expressed (as with docker -v).
pub fn parse_mount_arg(input: &str) -> Result<MountArg, SpecError> {
    let err = || SpecError::MountSyntax(input.to_string());
    let parts: Vec<&str> = input.split(':').collect();
    let mode = |s: &str| match s {
        "ro" => Some(false),
        "rw" => Some(true),
        _ => None,
    };
    let (source, target, writable) = match parts.as_slice() {
        [src] => (*src, None, true),
        [src, second] => match mode(second) {
            Some(w) => (*src, None, w),
            None => (*src, Some(*second), true),
        },
        [src, dst, m] => (*src, Some(*dst), mode(m).ok_or_else(err)?),
        _ => return Err(err()),
    };
    if source.is_empty() || target.is_some_and(|t| t.is_empty() || !t.starts_with('/')) {
        return Err(err());
    }
    Ok(MountArg { source: PathBuf::from(source), target: target.map(PathBuf::from), writable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str, t: Option<&str>, w: bool) -> MountArg {
        MountArg { source: s.into(), target: t.map(Into::into), writable: w }
    }

    #[test]
    fn forms() {
        assert_eq!(parse_mount_arg("/data").unwrap(), m("/data", None, true));
        assert_eq!(parse_mount_arg("/data:ro").unwrap(), m("/data", None, false));
        assert_eq!(parse_mount_arg("data:/mnt/d").unwrap(), m("data", Some("/mnt/d"), true));
        assert_eq!(parse_mount_arg("/data:/mnt/d:ro").unwrap(), m("/data", Some("/mnt/d"), false));
        assert_eq!(parse_mount_arg("/data:/mnt/d:rw").unwrap(), m("/data", Some("/mnt/d"), true));
    }

    #[test]
    fn fuzz_grammars() {
        let mut rng = crate::testing::XorShift::new(0xdead_beef_cafe_f00d);
        for _ in 0..50_000 {
            let len = rng.below(14);
            let s: String = (0..len).map(|_| char::from(rng.pick(b":/ro rwa.-0K\x00"))).collect();
            if let Ok(m) = parse_mount_arg(&s) {
                assert!(!m.source.as_os_str().is_empty());
                assert_eq!(m.to_arg().map(|a| parse_mount_arg(&a).unwrap()), Some(m.clone()), "{s:?}");
                assert!(m.target.as_ref().is_none_or(|t| t.is_absolute()));
            }
            if let Ok(n) = crate::parse_size(&s) {
                assert!(n >= 1);
            }
            let _ = crate::parse_env_arg(&s);
            let _ = crate::validate_name(&s);
            let _ = crate::validate_hostname(&s);
        }
    }

    #[test]
    fn rejects() {
        for bad in ["", ":/x", "/a:", "/a:rel", "/a:/b:rx", "/a:/b:ro:x", "/a::ro"] {
            assert!(parse_mount_arg(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
