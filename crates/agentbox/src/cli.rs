use std::ffi::OsString;
use std::path::PathBuf;

use agentbox_core::{
    parse_env_arg, parse_mount_arg, Backend, EnvArg, HostRule, Limits, MountArg, NetworkMode,
};
use clap::{Args, Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use crate::complete;

#[derive(Debug, Parser)]
#[command(name = "agentbox", version, about = "Run AI coding agents in sandboxes they cannot leave")]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

// The options every verb takes: where the agents are. (A plain comment: a doc comment on a
// flattened struct would become the top-level command's about text.)
#[derive(Debug, Args)]
pub struct Globals {
    /// Drive the agentbox server at URL instead of this machine (also AGENTBOX_SERVER)
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    pub server: Option<String>,
    /// Use a saved server context (see `agentbox context`; also AGENTBOX_CONTEXT)
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        conflicts_with = "server",
        help_heading = "Global options"
    )]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox on a workspace, in the foreground
    #[command(after_help = "EXIT STATUS:\n  the command's own code; 124 timeout; 125 agentbox failed; \
                            126 cannot execute; 127 not found; 128+N killed by signal N")]
    Run(Box<RunArgs>),
    /// Start a detached agent: a supervisor owns its terminal; the command runs in a sandbox
    Spawn(Box<SpawnArgs>),
    /// Spawn BASE-1 .. BASE-N with the same options
    Swarm(Box<SwarmArgs>),
    /// List agents
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one agent
    #[command(visible_alias = "inspect")]
    Info(InfoArgs),
    /// Print an agent's output log (ANSI stripped unless --raw)
    Logs(LogsArgs),
    /// Print an agent's current screen
    Screen(ScreenArgs),
    /// Type text into an agent's terminal (followed by Enter unless --no-enter)
    Send(SendArgs),
    /// Type text into every running agent (optionally only those with a tag)
    Broadcast(BroadcastArgs),
    /// Connect your terminal to an agent; detach with Ctrl-] (see --detach-key)
    Attach(AttachArgs),
    /// Start a stopped agent again (kills it first if it runs); replays its prompt
    Restart(RestartArgs),
    /// Start stopped agents again, on the same workspace (refused for one that runs)
    Start(StartArgs),
    /// Stop agents: SIGTERM to the agent's process group, then SIGKILL after a grace period
    Stop(StopArgs),
    /// Freeze agents: every process of the sandbox stopped (no CPU), memory and output kept
    Pause(PauseArgs),
    /// Continue paused agents where they were
    Resume(KillArgs),
    /// Copy an agent's workspace and home into a new, stopped agent
    Clone(CloneArgs),
    /// A new agent from a running or stopped one (workspace, home, spec), now or at a checkpoint
    Fork(ForkArgs),
    /// Save an agent's workspace and home as a checkpoint; prints its id (`checkpoint rm NAME ID`
    /// removes one)
    Checkpoint(CheckpointArgs),
    /// An agent's checkpoints
    Checkpoints(CheckpointsArgs),
    /// Put an agent's workspace and home back as a checkpoint saved them (a live agent restarts)
    Rollback(RollbackArgs),
    /// Write an agent's changes into the directory it was spawned from (or --to DIR)
    #[command(after_help = "\
Paths changed in DIR since the agent started are refused, and listed, unless --force. Links the
agent made are written as links (never followed); FIFOs, devices and set-id bits are not created.
`apply --undo NAME` puts back what the last apply overwrote.")]
    Apply(ApplyArgs),
    /// Rename a stopped agent
    Rename(RenameArgs),
    /// Run another command inside a running agent's sandbox
    Exec(ExecArgs),
    /// Forward 127.0.0.1:HOSTPORT here to PORT on a running agent's own loopback, until Ctrl-C or
    /// the agent ends
    Port(PortArgs),
    /// Copy files between an agent (running or stopped) and the host, like docker cp
    #[command(after_help = "\
Examples:
  agentbox cp fix-tests:out/report.html .     from the agent's workspace into this directory
  agentbox cp ./fixtures fix-tests:/tmp/in    a host directory into the agent
  agentbox cp fix-tests:src - | tar -t        a tar stream on stdout (`-` as the source reads one)

A relative path in the agent is from its working directory. Links, devices and FIFOs the agent
made are not copied to the host (each is named on stderr), nor are set-id bits.")]
    Cp(CpArgs),
    /// Files changed in an agent's workspace since it was spawned (git status too, run sandboxed)
    Diff(DiffArgs),
    /// A tmux session with one window per running agent, each attached
    Grid(GridArgs),
    /// A live table: state, CPU, memory and the last lines of every agent
    Watch(WatchArgs),
    /// Check that every commit made in an agent's workspace since spawn is signed by its identity
    Verify(VerifyArgs),
    /// CPU, memory and uptime of the agents' sandboxed processes
    Ps(PsArgs),
    /// The processes of one agent's sandbox, like `docker top`
    Top(TopArgs),
    /// Counts and disk use
    Stats(StatsArgs),
    /// Kill an agent's sandbox and everything in it
    Kill(KillArgs),
    /// Kill every running agent (optionally only those with a tag)
    Killall(KillAllArgs),
    /// Wait for an agent to exit; exits with its status (124 on timeout)
    Wait(WaitArgs),
    /// Remove stopped agents: workspace, home, log and record
    Rm(RmArgs),
    /// Remove every stopped agent
    Clean(CleanArgs),
    /// Kill and remove every agent, workspaces included (asks unless --force)
    Purge(PurgeArgs),
    /// The lifecycle journal
    History(HistoryArgs),
    /// An agent's network audit: every connection its proxy decided, with bytes each way
    Net(NetArgs),
    /// Let a running agent's proxy reach HOST without restarting it (--remove takes it back)
    Allow(AllowArgs),
    /// Take HOST off an agent's allowlist: `allow --remove`
    Deny(DenyArgs),
    /// Print the state directory (AGENTBOX_HOME)
    Root,
    /// List agent profiles (built-in and AGENTBOX_HOME/profiles/*.toml)
    Profiles(ProfilesArgs),
    /// Which credentials each profile needs and whether they are set
    Keys(ProfilesArgs),
    /// Keep a subscription login (OAuth) for a profile's agents: imported from your own login, held here, placeholders inside
    Login(LoginArgs),
    /// Forget a profile's stored subscription login
    Logout(LogoutArgs),
    /// Manage stored secrets (AGENTBOX_HOME/secrets.env, owner-only)
    Env(EnvArgs),
    /// Print a shell completion script
    Completion(CompletionArgs),
    /// Report which isolation features work on this machine
    Doctor(DoctorArgs),
    /// Saved servers for --server: add, use, list, rm
    Context(ContextArgs),
    /// Serve the REST/WebSocket API, metrics and the web dashboard (agents keep running without it)
    Serve(ServeArgs),
    /// Long-running tasks from a manifest: submit, list, show, logs, cancel, artifacts
    Task(TaskArgs),
    /// Named volumes shared by agents (-v NAME:/path): create, ls, rm
    Volume(VolumeArgs),
    /// Agents waiting on a person (HITL requests): list, answer
    Hitl(HitlArgs),
    /// The microVM backend: fetch the guest kernel, show what VMs would run with
    Vm(VmArgs),
    /// The state database: check it, or rebuild it from the agents' directories
    Store(StoreArgs),
    /// Agents' programs from their own registries: install, list, update, remove
    Agents(AgentsArgs),
    /// Print the version
    Version,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: AgentsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Install agents' programs (claude-code, codex, gemini, opencode, pi, aider) for every
    /// agent of their profile, in a sandbox that reaches only their registry
    Install {
        /// Profiles whose program to install
        #[arg(add = ArgValueCandidates::new(complete::profile_names), required = true, value_name = "PROFILE")]
        names: Vec<String>,
    },
    /// What can be installed, and what is
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Install the newest version again
    Update {
        /// Profiles whose program to install again
        #[arg(add = ArgValueCandidates::new(complete::profile_names), required = true, value_name = "PROFILE")]
        names: Vec<String>,
    },
    /// Remove an installed program
    #[command(visible_alias = "rm")]
    Remove {
        /// Profiles whose program to remove
        #[arg(add = ArgValueCandidates::new(complete::profile_names), required = true, value_name = "PROFILE")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the state database (SQLite's integrity check); exit status 1 when it is damaged
    Check,
    /// Move the state database aside and rebuild it from the agents' directories (each agent
    /// comes back as failed; restart it)
    Recover,
}

#[derive(Debug, Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Fetch the distribution's kernel package into the cache (or install a kernel you give)
    Setup(VmSetupArgs),
    /// Show the guest image, QEMU and the accelerator VMs use here (probing KVM if not yet known)
    Status(VmStatusArgs),
}

#[derive(Debug, Args)]
pub struct VmSetupArgs {
    /// Use this kernel image instead of fetching one (e.g. /boot/vmlinuz-6.1.0-28-amd64)
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The kernel's modules directory (default: /lib/modules/RELEASE for /boot/vmlinuz-RELEASE)
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// Fetch this kernel package instead of the one behind linux-image-ARCH
    #[arg(long, value_name = "NAME", conflicts_with = "kernel")]
    pub package: Option<String>,
}

#[derive(Debug, Args)]
pub struct VmStatusArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// The port the agent listens on, inside its sandbox
    pub port: u16,
    /// The port on this machine's 127.0.0.1 (default: the same; 0 picks a free one, printed)
    #[arg(value_name = "HOSTPORT")]
    pub host_port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// NAME:PATH in an agent, a host path, or - for a tar stream on stdin
    #[arg(value_name = "SRC")]
    pub src: String,
    /// NAME:PATH in an agent, a host path, or - for a tar stream on stdout
    #[arg(value_name = "DST")]
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make a volume; agents bind it with `-v NAME:/path[:ro]` (a spawn also makes one it names)
    Create {
        /// The volume's name (a-z, 0-9, '-')
        name: String,
    },
    /// The volumes, their size and the running agents that use them
    #[command(alias = "list")]
    Ls {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove volumes and their files (refused while a running agent uses one)
    #[command(alias = "remove")]
    Rm {
        /// The volumes' names
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task manifest (YAML or JSON); prints the task id
    #[command(
        after_help = "EXIT STATUS (--wait):\n  0 completed; 1 failed or cancelled (the state and reason are printed)"
    )]
    Submit {
        /// The manifest (.yaml, .yml or .json; `-` reads YAML from stdin)
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// Wait until the task ends
        #[arg(long)]
        wait: bool,
        /// Print the task as JSON
        #[arg(long)]
        json: bool,
    },
    /// List tasks
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one task: state, reason, directories, events
    Show {
        /// The task's id (or a unique prefix of it)
        #[arg(add = ArgValueCandidates::new(complete::task_ids))]
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print the agent's log of the task's current attempt
    Logs {
        /// The task's id (or a unique prefix of it)
        #[arg(add = ArgValueCandidates::new(complete::task_ids))]
        id: String,
        /// Keep printing until the task ends
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task in any state (its agent is killed)
    Cancel {
        /// The task's id (or a unique prefix of it)
        #[arg(add = ArgValueCandidates::new(complete::task_ids))]
        id: String,
    },
    /// List a task's artifacts, or copy them into DIR
    Artifacts {
        /// The task's id (or a unique prefix of it)
        #[arg(add = ArgValueCandidates::new(complete::task_ids))]
        id: String,
        /// Copy every artifact into DIR
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct HitlArgs {
    #[command(subcommand)]
    pub command: HitlCommand,
}

#[derive(Debug, Subcommand)]
pub enum HitlCommand {
    /// Open requests (with --all: answered and closed ones too)
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Also requests that were answered or went away
        #[arg(long)]
        all: bool,
    },
    /// Type TEXT (and Enter) into the agent that asked, and close the request
    Answer {
        /// The request's number (see `hitl list`)
        id: i64,
        /// What to type into the agent
        text: String,
        /// Do not press Enter after TEXT
        #[arg(long)]
        no_enter: bool,
    },
}

fn tag_arg(s: &str) -> Result<(String, String), String> {
    agentbox_engine::agents::parse_tag(s)
}

fn restart_arg(s: &str) -> Result<agentbox_core::RestartPolicy, String> {
    s.parse()
}

fn network_arg(s: &str) -> Result<NetworkMode, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Agent name: lowercase letters, digits and '-'
    pub name: String,
    #[command(flatten)]
    pub opts: SpawnOptions,
}

#[derive(Debug, Args, Clone)]
pub struct SpawnOptions {
    /// Agent profile: claude-code, codex, gemini, aider, opencode, pi or your own
    #[arg(short = 'p', long, value_name = "PROFILE", add = ArgValueCandidates::new(complete::profile_names))]
    pub profile: Option<String>,
    /// File typed into the agent once it runs
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// Tag the agent (repeatable; `-t` is the old spelling, kept for now)
    #[arg(long = "tag", short_alias = 't', value_name = "KEY=VAL", value_parser = tag_arg)]
    pub tags: Vec<(String, String)>,
    /// Give the agent its own Ed25519 key; git inside signs every commit with it (see `verify`)
    #[arg(long)]
    pub identity: bool,
    /// Start from a copy-on-write view of DIR instead of an empty workspace (with a profile, the
    /// default when the current directory is a git work tree)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["mount", "from_git", "empty"])]
    pub from_dir: Option<PathBuf>,
    /// A fresh, empty workspace even where --from-dir . would be the default
    #[arg(long, conflicts_with_all = ["mount", "from_git"])]
    pub empty: bool,
    /// Start from a clone of a git repository (URL or local path), made inside a sandbox
    #[arg(long, value_name = "URL", conflicts_with = "mount")]
    pub from_git: Option<String>,
    /// With --from-git: the branch, tag or commit to check out
    #[arg(long = "ref", value_name = "REF", requires = "from_git")]
    pub git_ref: Option<String>,
    /// Use the host directory DIR itself as the workspace, read-write (as `run -w`; `--mount` is the old spelling)
    #[arg(short = 'w', long = "workspace", alias = "mount", value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Bind another host path: HOST[:SANDBOX][:ro|rw] (read-write unless :ro); repeatable
    #[arg(short = 'v', long = "volume", value_name = "HOST[:SANDBOX][:ro]", value_parser = mount_arg)]
    pub volumes: Vec<MountArg>,
    /// Working directory inside (relative paths are taken from the workspace)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Forward 127.0.0.1:HOSTPORT on this machine to PORT on the agent's own loopback while it
    /// runs (HOSTPORT defaults to PORT); repeatable
    #[arg(long, value_name = "[HOSTPORT:]PORT")]
    pub publish: Vec<agentbox_core::PortMap>,
    /// Start the agent again when it exits non-zero: on-failure[:N[:WINDOW]]; N failures within
    /// WINDOW (default 5 in 60s) stop it as a crash loop
    #[arg(long, value_name = "POLICY", value_parser = restart_arg)]
    pub restart: Option<agentbox_core::RestartPolicy>,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
    /// The command (after --); default: a shell
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// Base name: agents are BASE-1 .. BASE-N
    pub base: String,
    /// How many agents
    pub count: u32,
    #[command(flatten)]
    pub opts: SpawnOptions,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Keep stdin attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Set KEY=VALUE for this command, or pass the caller's KEY
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]", value_parser = env_arg)]
    pub env: Vec<EnvArg>,
    /// Working directory (relative to the workspace; `-w` is the old spelling, kept for now)
    #[arg(long, short_alias = 'w', value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The command and its arguments (`--` before it is optional)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Skip git status even in a git repository
    #[arg(long)]
    pub no_git: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GridArgs {
    /// Create the session but do not attach to it
    #[arg(long)]
    pub no_attach: bool,
    /// Panes per window (tiled); more agents go to further windows
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub per_window: u16,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Seconds between refreshes
    #[arg(short = 'n', long = "interval", default_value_t = 2.0)]
    pub interval: f64,
    /// Output lines shown per agent
    #[arg(long, default_value_t = 3)]
    pub lines: usize,
    /// Print one frame and exit
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
}

/// Agents named, or chosen by tag: every verb that acts on agents takes several, goes on past a
/// failure and exits non-zero if any failed.
#[derive(Debug, Args)]
pub struct Targets {
    /// Agent names
    #[arg(add = ArgValueCandidates::new(complete::agent_names), value_name = "NAME", required_unless_present = "tags")]
    pub names: Vec<String>,
    /// Also every agent with this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "KEY=VAL", value_parser = tag_arg)]
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub targets: Targets,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub targets: Targets,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Seconds to wait after SIGTERM before killing
    #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub time: u64,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The agent to copy (stopped)
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub src: String,
    /// The new agent's name
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The agent to fork (running or stopped)
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub src: String,
    /// The new agent's name
    pub dst: String,
    /// From this checkpoint (see `checkpoints NAME`) instead of the agent as it is now
    #[arg(long, value_name = "CHECKPOINT")]
    pub at: Option<String>,
    /// Make the new agent but do not start it
    #[arg(long)]
    pub stopped: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    pub command: Option<CheckpointCommand>,
    /// The agent's name
    #[arg(required = true, add = ArgValueCandidates::new(complete::agent_names))]
    pub name: Option<String>,
    /// What the checkpoint is (shown by `checkpoints`)
    #[arg(short, long, value_name = "MSG", default_value = "")]
    pub message: String,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Remove checkpoints of an agent
    Rm {
        /// The agent's name
        #[arg(add = ArgValueCandidates::new(complete::agent_names))]
        name: String,
        /// Checkpoint ids
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// The checkpoint's id
    pub checkpoint: String,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Only these paths of the workspace (each with what is below it)
    #[arg(value_name = "PATH", conflicts_with = "undo")]
    pub paths: Vec<PathBuf>,
    /// Write into DIR instead of the directory the agent was spawned from
    #[arg(long, value_name = "DIR", conflicts_with = "undo")]
    pub to: Option<PathBuf>,
    /// Say what would be written; write nothing
    #[arg(short = 'n', long, conflicts_with = "undo")]
    pub dry_run: bool,
    /// Overwrite paths that changed in the directory since the agent started (with --undo: undo
    /// paths changed since the apply)
    #[arg(short, long)]
    pub force: bool,
    /// Put back what the last apply overwrote or removed
    #[arg(long)]
    pub undo: bool,
    /// A --from-git agent: print its work since the commit it was spawned on as one patch
    /// (`git apply` takes it, binary files too)
    #[arg(long, conflicts_with_all = ["undo", "paths", "to", "dry_run", "branch"])]
    pub patch: bool,
    /// A --from-git agent: make its work one commit on a new branch BR of the repository it was
    /// cloned from (or --to REPO), on the commit it was spawned on; --force replaces a branch
    #[arg(long, value_name = "BR", conflicts_with_all = ["undo", "paths", "dry_run"])]
    pub branch: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The agent's current name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub old: String,
    /// The agent's new name
    pub new: String,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The agent
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// One JSON object per process
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include stopped agents
    #[arg(short, long)]
    pub all: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The profile whose login to keep (claude-code, codex, gemini)
    #[arg(add = ArgValueCandidates::new(complete::profile_names))]
    pub profile: String,
    /// The agent's credentials file to import (default: the profile's file in your home, e.g. ~/.claude/.credentials.json)
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The profile whose stored login to remove
    pub profile: String,
}

#[derive(Debug, Args)]
pub struct ProfilesArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Names of the stored secrets
    List,
    /// Print one value
    Get {
        /// The secret's name
        key: String,
    },
    /// Store KEY VALUE or KEY=VALUE (no VALUE: read from stdin, not echoed on a terminal)
    Set {
        /// The secret's name (or KEY=VALUE)
        key: String,
        /// The value (left out: read from stdin)
        value: Option<String>,
    },
    /// Remove one
    Unset {
        /// The secret's name
        key: String,
    },
    /// Print the file's path
    Path,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only agents with this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "KEY=VAL", value_parser = tag_arg)]
    pub tags: Vec<(String, String)>,
    /// Only live agents (running, paused), only paused ones, or only stopped ones
    #[arg(long, value_parser = ["running", "paused", "exited"])]
    pub status: Option<String>,
    /// Names only
    #[arg(short, long)]
    pub quiet: bool,
    /// Print all agents as a JSON array
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// One line per agent from a template, as docker's: '{{.Name}}\t{{.State}}'. Fields: Name,
    /// State, ExitCode, Pid, Age, Profile, Network, Tags, Workspace, Command
    #[arg(long, value_name = "TEMPLATE", value_parser = crate::format::Template::parse_arg)]
    pub format: Option<crate::format::Template>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Keep printing new records until the agent exits
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON record per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// A host (api.example.com), a domain (*.example.com) or an IP address
    #[arg(value_parser = host_rule_arg)]
    pub host: HostRule,
    /// For the next connection only
    #[arg(long, conflicts_with = "always")]
    pub once: bool,
    /// Also for every agent from now on (adds it to [network] allow of the config; with --remove, takes it off)
    #[arg(long)]
    pub always: bool,
    /// Take HOST off the agent's allowlist instead (also `agentbox deny NAME HOST`)
    #[arg(long, conflicts_with = "once")]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The agent
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// The rule as it was allowed (api.example.com, *.example.com, an IP address)
    #[arg(value_parser = host_rule_arg)]
    pub host: HostRule,
    /// Also off [network] allow of the config (every agent from now on)
    #[arg(long)]
    pub always: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Only the last N lines
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Keep printing new output until the agent exits (as plain text)
    #[arg(short, long)]
    pub follow: bool,
    /// The bytes as the agent wrote them (escape sequences, carriage returns); without it, the
    /// lines its screen showed
    #[arg(long, conflicts_with = "timestamps")]
    pub raw: bool,
    /// Only output written since WHEN: a duration ago (90s, 10m, 2h) or a time in UTC
    /// (2026-11-29T10:00:00Z, "2026-11-29 10:00"), or Unix seconds
    #[arg(long, value_name = "WHEN", value_parser = when_arg)]
    pub since: Option<u64>,
    /// Only output written before WHEN (as for --since)
    #[arg(long, value_name = "WHEN", value_parser = when_arg, conflicts_with = "follow")]
    pub until: Option<u64>,
    /// Each line with the time it was written (UTC, to the second), line by line as written
    #[arg(long)]
    pub timestamps: bool,
}

/// `--since`/`--until`: a duration before now, a UTC time, or Unix seconds, as Unix ms.
fn when_arg(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now();
    let t = s.trim();
    let at = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().ok().and_then(|secs| secs.checked_mul(1000)).map(std::time::Duration::from_millis)
    } else if let Ok(ago) = agentbox_core::parse_duration(t) {
        now.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|n| n.checked_sub(std::time::Duration::from_secs(ago)))
    } else {
        let full = match t.len() {
            10 => format!("{t} 00:00:00"),
            16 => format!("{t}:00"),
            _ => t.to_string(),
        };
        humantime::parse_rfc3339_weak(&full).ok().and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
    };
    at.and_then(|d| u64::try_from(d.as_millis()).ok()).ok_or_else(|| {
        format!("'{s}' is not a time: use a duration ago (10m, 2h), a UTC time (2026-11-29T10:00:00Z) or Unix seconds")
    })
}

#[derive(Debug, Args)]
pub struct ScreenArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Include colours and attributes as escape sequences
    #[arg(long)]
    pub ansi: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Text to type (words are joined with spaces)
    pub text: Vec<String>,
    /// Type the contents of FILE instead
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// Do not press Enter afterwards
    #[arg(long)]
    pub no_enter: bool,
}

#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// Only agents with this tag (repeatable)
    #[arg(long = "tag", value_name = "KEY=VAL", value_parser = tag_arg)]
    pub tags: Vec<(String, String)>,
    /// Type the text without pressing Enter after it
    #[arg(long)]
    pub no_enter: bool,
    /// Text to type
    #[arg(required = true)]
    pub text: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Watch without typing
    #[arg(long)]
    pub read_only: bool,
    /// Leave the agent's terminal size as it is (others attached keep theirs; `grid` uses it)
    #[arg(long)]
    pub keep_size: bool,
    /// Key that detaches, e.g. ctrl-] (default) or ctrl-q; also AGENTBOX_DETACH_KEY
    #[arg(long, value_name = "KEY")]
    pub detach_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub targets: Targets,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Instead of now: pause whenever it has been idle (no output, no input) this long (90s,
    /// 10m, 1h), anything typed into it resuming it; `off` stops that. Kept across restarts
    #[arg(long, value_name = "IDLE", value_parser = idle_arg)]
    pub after: Option<IdleAfter>,
}

/// `pause --after`'s value: an idle time, or `None` for `off`.
#[derive(Debug, Clone, Copy)]
pub struct IdleAfter(pub Option<std::time::Duration>);

fn idle_arg(s: &str) -> Result<IdleAfter, String> {
    agentbox_core::parse_idle(s).map(IdleAfter)
}

#[derive(Debug, Args)]
pub struct KillAllArgs {
    /// Only agents with this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "KEY=VAL", value_parser = tag_arg)]
    pub tags: Vec<(String, String)>,
    /// Do not ask (it asks on a terminal when no --tag narrows it down)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Do not ask
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The agent's name
    #[arg(add = ArgValueCandidates::new(complete::agent_names))]
    pub name: String,
    /// Give up after SECS seconds (exit status 124)
    #[arg(long, value_name = "SECS", value_parser = timeout_arg)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Agent names
    #[arg(add = ArgValueCandidates::new(complete::agent_names), required = true)]
    pub names: Vec<String>,
    /// Kill running agents first
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many events (newest)
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    pub lines: usize,
    /// Only events of this kind (spawn, start, exit, killed, failed, rm)
    #[arg(short = 'e', long = "event")]
    pub event: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

fn mount_arg(s: &str) -> Result<MountArg, String> {
    parse_mount_arg(s).map_err(|e| e.to_string())
}
fn host_rule_arg(s: &str) -> Result<HostRule, String> {
    s.parse()
}
fn secret_arg(s: &str) -> Result<(String, Option<Vec<HostRule>>), String> {
    agentbox_core::parse_secret_arg(s)
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
fn backend_arg(s: &str) -> Result<Backend, String> {
    s.parse()
}

fn cpus_arg(s: &str) -> Result<f64, String> {
    Limits::parse_cpus(s).map_err(|e| e.to_string())
}
/// Ten years: longer is no timeout, and would overflow the clock.
const MAX_TIMEOUT: u64 = 10 * 365 * 24 * 3600;

fn timeout_arg(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_TIMEOUT).contains(&n) => Ok(n),
        _ => Err(agentbox_core::SpecError::Timeout(s.to_string()).to_string()),
    }
}

/// Sandbox settings shared by `run` and `spawn`.
#[derive(Debug, Args, Clone)]
pub struct SandboxFlags {
    /// Network: none (loopback only), proxy (only allowed hosts, through agentbox's egress proxy)
    /// or full (the host's network). Default: none, or proxy with --allow/--secret/--ask
    #[arg(long, value_name = "MODE", value_parser = network_arg)]
    pub network: Option<NetworkMode>,
    /// Let the proxy reach HOST (exact, *.domain, or an IP address); repeatable
    #[arg(long = "allow", value_name = "HOST", value_parser = host_rule_arg)]
    pub allow: Vec<HostRule>,
    /// Keep secret NAME on the host: the sandbox sees a placeholder that the proxy swaps for the
    /// real value toward HOSTs only (default hosts: config, then built-in profiles); repeatable
    #[arg(long = "secret", value_name = "NAME[=HOST,...]", value_parser = secret_arg)]
    pub secrets: Vec<(String, Option<Vec<HostRule>>)>,
    /// Hold requests to hosts outside the policy until `agentbox allow` (or a timeout)
    #[arg(long)]
    pub ask: bool,
    /// Set KEY=VALUE inside, or pass the caller's KEY (nothing else of the caller's environment passes)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]", value_parser = env_arg)]
    pub env: Vec<EnvArg>,
    /// Memory limit for the whole sandbox, e.g. 512M or 2G (with --backend vm: the guest's
    /// memory, default 1G)
    #[arg(long, value_name = "SIZE", value_parser = memory_arg, allow_negative_numbers = true)]
    pub memory: Option<u64>,
    /// Maximum number of processes
    #[arg(long, value_name = "N", value_parser = pids_arg, allow_negative_numbers = true)]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores, e.g. 0.5 or 2 (with --backend vm: virtual CPUs, rounded up)
    #[arg(long, value_name = "N", value_parser = cpus_arg, allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Isolation: ns (namespaces, Landlock, seccomp; the default) or vm (a QEMU microVM with its
    /// own kernel; set it up once with `agentbox vm setup`)
    #[arg(long, value_name = "BACKEND", value_parser = backend_arg)]
    pub backend: Option<Backend>,
}

impl SandboxFlags {
    pub fn limits(&self) -> Limits {
        Limits { memory: self.memory, pids: self.pids, cpus: self.cpus }
    }

    pub fn egress(&self) -> agentbox_core::EgressRequest {
        agentbox_core::EgressRequest {
            allow: self.allow.clone(),
            secrets: self.secrets.clone(),
            ask: self.ask,
        }
    }

    /// The network mode asked for: explicit, or `proxy` when a policy flag implies it.
    pub fn network_mode(&self, fallback: Option<NetworkMode>) -> NetworkMode {
        let implied = self.egress().implies_proxy().then_some(NetworkMode::Proxy);
        self.network.or(implied).or(fallback).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace directory, bound read-write at the same path (default: the current directory)
    #[arg(short = 'w', long = "workspace", value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
    /// Bind another host path: HOST[:SANDBOX][:ro|rw] (read-write unless :ro); repeatable (`--mount` is the old spelling)
    #[arg(short = 'v', long = "volume", alias = "mount", value_name = "HOST[:SANDBOX][:ro]", value_parser = mount_arg)]
    pub mounts: Vec<MountArg>,
    /// Working directory inside (relative paths are taken from the workspace)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
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
    #[arg(long)]
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

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8122")]
    pub listen: String,
    /// TLS certificate chain (PEM); required with a non-loopback --listen
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: the token and everything else cross the network unencrypted
    #[arg(long)]
    pub insecure_plain_http_on_network: bool,
    /// Worker threads (default 2)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl From<ServeArgs> for agentbox_server::ServeOptions {
    fn from(a: ServeArgs) -> Self {
        Self {
            listen: a.listen,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            insecure_plain_http_on_network: a.insecure_plain_http_on_network,
            threads: a.threads,
        }
    }
}

#[derive(Debug, Args)]
pub struct ContextArgs {
    #[command(subcommand)]
    pub command: ContextCommand,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Save a server as NAME
    Add {
        /// The context's name
        name: String,
        /// The server's URL, e.g. https://agents.example.com:8122
        url: String,
        /// A file holding the token (default: AGENTBOX_TOKEN, then AGENTBOX_HOME/api-token)
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Make NAME the default for every command (`none`: this machine again)
    Use {
        /// The context's name (`none`: this machine)
        name: String,
    },
    /// List saved contexts
    #[command(visible_alias = "ls")]
    List,
    /// Forget NAME
    Rm {
        /// The context's name
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every verb says what it is (`<NAME>` and `--json` included), and the
    /// global options are in a section of their own.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || ["help", "version"].contains(&id) {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
                if ["server", "context"].contains(&id) {
                    assert_eq!(a.get_help_heading(), Some("Global options"), "{path} {id}");
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "agentbox", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
