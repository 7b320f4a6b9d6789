use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "no guest kernel is set up in {0}: run `agentbox vm setup` (or `agentbox vm setup --kernel PATH`)"
    )]
    NotSetUp(PathBuf),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the guest image in {path} is unreadable ({message}): run `agentbox vm setup` again")]
    Manifest { path: PathBuf, message: String },
    #[error("kernel module {path}: {message}")]
    Module { path: PathBuf, message: String },
    #[error("the guest kernel needs module '{0}', which is neither in its modules directory nor built in")]
    MissingModule(String),
    #[error("{0} was not found: install QEMU (Debian: apt-get install qemu-system-x86)")]
    NoQemu(&'static str),
    #[error("{0}")]
    Setup(String),
    #[error("channel: {0}")]
    Channel(String),
}

impl VmError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}
