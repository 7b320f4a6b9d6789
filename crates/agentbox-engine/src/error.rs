//! The engine's error: a message for people, a [`Kind`] for front ends, and the cause.
//!
//! Every front end maps the kind in one exhaustive match (the server to a status code, the CLI to
//! its exit status and wording), so a new error can never silently become a server fault: an
//! error is `Internal` only when nothing the caller did or could change explains it.

use std::fmt;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request is wrong: a bad name, flag, path or value. The message says how to fix it.
    Invalid,
    /// What it names does not exist (an agent, a task, a request).
    NotFound,
    /// It conflicts with the state things are in (the agent runs, or does not; the name is taken).
    Conflict,
    /// Allowed in general, refused here by policy (a path agentbox will not expose, a secret it
    /// will not pass).
    Refused,
    /// Something failed that the caller could not have prevented (disk, database, a bug).
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::NotFound => "not-found",
            Kind::Conflict => "conflict",
            Kind::Refused => "refused",
            Kind::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Kind::Invalid, Kind::NotFound, Kind::Conflict, Kind::Refused, Kind::Internal]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

pub struct Error {
    kind: Kind,
    message: String,
    /// The part of a spawn request it is about, for the front end to name in its own words.
    field: Option<agentbox_core::Field>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), field: None, source: None }
    }

    /// The same error, about `field` of a spawn request.
    pub fn for_field(mut self, field: agentbox_core::Field) -> Self {
        self.field = Some(field);
        self
    }

    /// The field of a spawn request this error is about, if any (kept through contexts).
    pub fn field(&self) -> Option<agentbox_core::Field> {
        self.field
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Kind::Refused, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// An error of another library, with the kind it stands for.
    pub fn from_source(kind: Kind, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind, message: String::new(), field: None, source: Some(Box::new(source)) }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The same error with another kind (a caller that knows better).
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// `context: self`, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: context.to_string(),
            field: self.field,
            source: Some(Box::new(self)),
        }
    }

    /// The innermost cause's message (without the contexts around it).
    pub fn root_message(&self) -> String {
        let mut current = self;
        loop {
            match &current.source {
                Some(s) => match s.downcast_ref::<Error>() {
                    Some(inner) => current = inner,
                    None => return s.to_string(),
                },
                None => return current.message.clone(),
            }
        }
    }
}

impl fmt::Display for Error {
    /// `context: cause: ...`, the whole chain, as people read it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message.is_empty(), &self.source) {
            (true, Some(s)) => write!(f, "{s}"),
            (false, Some(s)) => write!(f, "{}: {s}", self.message),
            (_, None) => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self, self.kind.as_str())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The chain is already part of Display; a source that is our own wrapper is shown there.
        None
    }
}

/// `.context(...)` and `.with_context(|| ...)` on results and options, like anyhow's.
pub trait Context<T> {
    fn context(self, context: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::internal(context.to_string()))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::internal(f().to_string()))
    }
}

/// Returns an internal error made from a format string, or the given error.
#[macro_export]
macro_rules! bail {
    ($msg:literal $(,)?) => {
        return Err($crate::Error::internal(format!($msg)))
    };
    ($fmt:literal, $($arg:tt)*) => {
        return Err($crate::Error::internal(format!($fmt, $($arg)*)))
    };
    ($err:expr $(,)?) => {
        return Err($crate::Error::from($err))
    };
}

/// Bails unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($rest:tt)+) => {
        if !$cond {
            $crate::bail!($($rest)+);
        }
    };
}

/// An internal error made from a format string.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::Error::internal(format!($($arg)*))
    };
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Self {
        Self::internal(e.desc())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(e: std::num::ParseIntError) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<ssh_key::Error> for Error {
    fn from(e: ssh_key::Error) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Self::internal(s)
    }
}

impl From<agentbox_core::SpecError> for Error {
    fn from(e: agentbox_core::SpecError) -> Self {
        Self::from_source(Kind::Invalid, e)
    }
}

impl From<agentbox_core::ManifestError> for Error {
    fn from(e: agentbox_core::ManifestError) -> Self {
        Self::from_source(Kind::Invalid, e)
    }
}

impl From<agentbox_store::StoreError> for Error {
    fn from(e: agentbox_store::StoreError) -> Self {
        use agentbox_store::StoreError as S;
        if e.is_read_only() {
            let msg = "AGENTBOX_HOME is read-only: agentbox can show what is there but not change it";
            return Self { kind: Kind::Refused, message: msg.into(), field: None, source: Some(Box::new(e)) };
        }
        if e.is_full() {
            let msg = "the disk holding AGENTBOX_HOME is full; free space there (`agentbox rm NAME` removes an agent's workspace)";
            return Self {
                kind: Kind::Internal,
                message: msg.into(),
                field: None,
                source: Some(Box::new(e)),
            };
        }
        let kind = match &e {
            S::NotFound(_) | S::NoTask(_) | S::NoHitl(_) => Kind::NotFound,
            S::AmbiguousTask(_) => Kind::Invalid,
            S::Exists(_) | S::WrongState { .. } | S::Superseded { .. } => Kind::Conflict,
            S::Sql(_) | S::Migration(_) | S::Watch(_) | S::Lock(_) | S::Corrupt { .. } => Kind::Internal,
        };
        Self::from_source(kind, e)
    }
}

impl From<agentbox_jail::JailError> for Error {
    fn from(e: agentbox_jail::JailError) -> Self {
        use agentbox_jail::JailError as J;
        // A command that cannot run, or a spec that is wrong, is the caller's to fix.
        let kind = match &e {
            J::Spec(_)
            | J::Exec { .. }
            | J::Workspace { .. }
            | J::MountSource { .. }
            | J::OpenSource { .. } => Kind::Invalid,
            J::Limits(_) => Kind::Refused,
            J::Freeze(_) => Kind::Conflict,
            _ => Kind::Internal,
        };
        Self::from_source(kind, e)
    }
}

impl From<agentbox_supervisor::ClientError> for Error {
    fn from(e: agentbox_supervisor::ClientError) -> Self {
        use agentbox_supervisor::ClientError as C;
        let kind = match &e {
            C::NotRunning(_) | C::Refused(_) | C::Timeout(_) => Kind::Conflict,
            C::Io(_) | C::Sys(..) => Kind::Internal,
        };
        Self::from_source(kind, e)
    }
}

impl From<agentbox_supervisor::SupervisorError> for Error {
    fn from(e: agentbox_supervisor::SupervisorError) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<agentbox_proxy::ProxyError> for Error {
    fn from(e: agentbox_proxy::ProxyError) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<agentbox_vm::VmError> for Error {
    fn from(e: agentbox_vm::VmError) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

impl From<crate::tree::TreeError> for Error {
    fn from(e: crate::tree::TreeError) -> Self {
        use crate::tree::TreeError as T;
        let kind = match &e {
            T::TooLarge { .. } | T::TooMany { .. } | T::TooDeep { .. } | T::NotBeneath { .. } => {
                Kind::Invalid
            }
            T::Exists { .. } => Kind::Conflict,
            T::Io { .. } => Kind::Internal,
        };
        Self::from_source(kind, e)
    }
}

impl From<crate::tree::CopyError> for Error {
    fn from(e: crate::tree::CopyError) -> Self {
        match e {
            crate::tree::CopyError::Budget => Self::invalid("more data than allowed"),
            crate::tree::CopyError::Io(errno) => Self::internal(errno.desc()),
        }
    }
}

impl From<toml::de::Error> for Error {
    fn from(e: toml::de::Error) -> Self {
        Self::from_source(Kind::Invalid, e)
    }
}

impl From<toml::ser::Error> for Error {
    fn from(e: toml::ser::Error) -> Self {
        Self::from_source(Kind::Internal, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Result<()> {
        Err(Error::not_found("no agent named 'x'"))
    }

    #[test]
    fn context_keeps_the_kind_and_reads_as_a_chain() {
        let e = inner().context("killing x").unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.to_string(), "killing x: no agent named 'x'");
        assert_eq!(e.root_message(), "no agent named 'x'");
        let io: Result<()> = Err(std::io::Error::other("disk on fire").into());
        assert_eq!(io.context("writing").unwrap_err().to_string(), "writing: disk on fire");
        let f = || -> Result<()> { bail!("n = {}", 3) };
        assert_eq!(f().unwrap_err().kind(), Kind::Internal);
        let g = || -> Result<()> { bail!(Error::invalid("bad")) };
        assert_eq!(g().unwrap_err().kind(), Kind::Invalid);
        for k in [Kind::Invalid, Kind::NotFound, Kind::Conflict, Kind::Refused, Kind::Internal] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
