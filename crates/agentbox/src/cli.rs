use std::ffi::OsString;
use std::path::PathBuf;

use agentbox_core::{parse_env_arg, parse_mount_arg, EnvArg, Limits, MountArg, NetworkMode};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "agentbox", version, about = "Run AI coding agents in sandboxes they cannot leave")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox on a workspace, in the foreground
    #[command(after_help = "EXIT STATUS:\n  the command's own code; 124 timeout; 125 agentbox failed; \
                            126 cannot execute; 127 not found; 128+N killed by signal N")]
    Run(Box<RunArgs>),
    /// Report which isolation features work on this machine
    Doctor(DoctorArgs),
    /// Print the version
    Version,
}

fn mount_arg(s: &str) -> Result<MountArg, String> {
    parse_mount_arg(s).map_err(|e| e.to_string())
}
fn env_arg(s: &str) -> Result<EnvArg, String> {
    parse_env_arg(s).map_err(|e| e.to_string())
}
fn memory_arg(s: &str) -> Result<u64, String> {
    Limits::parse_memory(s).map_err(|e| e.to_string())
}
fn pids_arg(s: &str) -> Result<u64, String> {
    Limits::parse_pids(s).map_err(|e| e.to_string())
}
fn cpus_arg(s: &str) -> Result<f64, String> {
    Limits::parse_cpus(s).map_err(|e| e.to_string())
}
fn timeout_arg(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(agentbox_core::SpecError::Timeout(s.to_string()).to_string()),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace directory, bound read-write at the same path (default: the current directory)
    #[arg(short = 'w', long = "workspace", value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Network: none (loopback only) or full (the host's network)
    #[arg(long, default_value = "none", value_name = "MODE")]
    pub network: NetworkMode,
    /// Bind a host path: HOST[:SANDBOX][:ro|rw] (read-write unless :ro)
    #[arg(long = "mount", value_name = "HOST[:SANDBOX][:ro]", value_parser = mount_arg)]
    pub mounts: Vec<MountArg>,
    /// Set KEY=VALUE inside, or pass the caller's KEY (nothing else of the caller's environment passes)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]", value_parser = env_arg)]
    pub env: Vec<EnvArg>,
    /// Working directory inside (relative paths are taken from the workspace)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Memory limit for the whole sandbox, e.g. 512M or 2G
    #[arg(long, value_name = "SIZE", value_parser = memory_arg, allow_negative_numbers = true)]
    pub memory: Option<u64>,
    /// Maximum number of processes
    #[arg(long, value_name = "N", value_parser = pids_arg, allow_negative_numbers = true)]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores, e.g. 0.5 or 2
    #[arg(long, value_name = "N", value_parser = cpus_arg, allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Kill the sandbox after SECS seconds (exit status 124)
    #[arg(long, value_name = "SECS", value_parser = timeout_arg, allow_negative_numbers = true)]
    pub timeout: Option<u64>,
    /// Hostname inside
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// uid the caller becomes inside
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// gid the caller becomes inside
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Give the command a terminal even when stdin/stdout are not terminals
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never give the command a terminal; pass stdin/stdout/stderr through
    #[arg(long)]
    pub no_tty: bool,
    /// Print the setup plan as JSON instead of running
    #[arg(long)]
    pub dry_run: bool,
    /// Say how limits are enforced
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments (after --), passed exactly as given
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}
