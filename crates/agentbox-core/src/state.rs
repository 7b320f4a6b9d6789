//! The states of agents, tasks and HITL requests, and the moves allowed between them.
//!
//! Each is an enum stored as its lower-case name. The store writes a move only if the row is still
//! in one of the states the move is allowed from (`UPDATE ... WHERE state IN (...)`), in the same
//! transaction as its journal entry, so two writers racing cannot both move it and a move is
//! never recorded without its event.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Declares a state enum with its stored names.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stored (and shown) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            /// Honours width and alignment (`{:<9}` in tables).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!(
                        "'{other}' is not a {}: use one of {}",
                        stringify!($name),
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

states! {
    /// Where an agent is in its life.
    AgentState {
        /// Its name is claimed; its directories and spec are being made (spawn, clone).
        Creating = "creating",
        /// Its supervisor is starting the sandbox.
        Starting = "starting",
        Running = "running",
        /// Every process of its sandbox is stopped (`pause`), memory kept, until `resume`.
        Paused = "paused",
        /// The command ended by itself (with an exit code).
        Exited = "exited",
        /// Someone killed it.
        Killed = "killed",
        /// It could not start, or its supervisor vanished.
        Failed = "failed",
        /// Made but never started (`clone`).
        Created = "created",
        /// It failed too often in a row (`--restart on-failure`) and is not started again.
        Crashloop = "crashloop",
    }
}

impl AgentState {
    /// A state in which the agent may still be running (its supervisor owns it).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Paused)
    }

    /// The states a move to `self` may start from.
    pub fn allowed_from(self) -> &'static [AgentState] {
        use AgentState::*;
        match self {
            // A start (spawn's first start is an insert): from any state the agent rests in.
            Starting => &[Creating, Exited, Killed, Failed, Created, Crashloop],
            Running => &[Starting, Paused],
            Paused => &[Running],
            Exited | Killed | Failed => &[Starting, Running, Paused],
            // Decided after the last failure was recorded.
            Crashloop => &[Exited, Failed],
            Created => &[Creating],
            // A name is claimed by an insert, never by a move.
            Creating => &[],
        }
    }

    /// Whether the move `self -> to` is allowed.
    pub fn can_move_to(self, to: AgentState) -> bool {
        to.allowed_from().contains(&self)
    }

    /// Whether the agent may be started again (`restart`, `start`).
    pub fn can_start(self) -> bool {
        self.can_move_to(Self::Starting)
    }

    /// The journal event a move to this state is recorded as.
    pub fn event(self) -> &'static str {
        match self {
            Self::Exited => "exit",
            Self::Paused => "pause",
            other => other.as_str(),
        }
    }
}

states! {
    /// Where a task is. `failed` and `cancelled` can follow any state before the end.
    TaskState {
        Pending = "pending",
        Staging = "staging",
        Provisioning = "provisioning",
        Running = "running",
        Completing = "completing",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskState {
    /// States a task does not leave.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether the runner may move a task from `self` to `to`.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        if self.is_final() {
            return false;
        }
        match to {
            Failed | Cancelled => true,
            Staging => matches!(self, Pending | Staging),
            Provisioning => matches!(self, Staging | Running),
            Running => self == Provisioning,
            Completing => self == Running,
            Completed => self == Completing,
            Pending => false,
        }
    }
}

states! {
    /// What a HITL request waits for.
    HitlKind {
        /// `[Y/n]`, `(yes/no)` and the like.
        YesNo = "yes-no",
        /// A numbered menu.
        Choices = "choices",
        /// "Do you want to proceed?"-style confirmations.
        Confirm = "confirm",
        /// A line ending in `?` after the agent went quiet.
        Question = "question",
    }
}

states! {
    /// Where a HITL request is.
    HitlState {
        Open = "open",
        Answered = "answered",
        /// The prompt left the screen (answered at a terminal) or the agent ended.
        Gone = "gone",
    }
}

states! {
    /// What the egress proxy decided for one connection attempt (audit records).
    Decision {
        /// Passed through untouched (CONNECT).
        Tunnel = "tunnel",
        /// TLS terminated here, credentials swapped.
        Intercept = "intercept",
        /// A plain-HTTP request forwarded.
        Http = "http",
        Denied = "denied",
        /// Waiting for `agentbox allow` (`--ask`).
        Pending = "pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_say_why() {
        for s in AgentState::ALL {
            assert_eq!(s.as_str().parse::<AgentState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        for k in HitlKind::ALL {
            assert_eq!(serde_json::from_str::<HitlKind>(&format!("\"{k}\"")).unwrap(), *k);
        }
        let e = "runing".parse::<AgentState>().unwrap_err();
        assert!(e.contains("runing") && e.contains("running"), "{e}");
    }

    #[test]
    fn agent_moves() {
        use AgentState::*;
        assert!(Starting.can_move_to(Running));
        assert!(Running.can_move_to(Killed) && Starting.can_move_to(Failed));
        assert!(!Running.can_move_to(Starting), "a running agent is not started twice");
        assert!(!Exited.can_move_to(Running), "only a starting agent runs");
        assert!(!Killed.can_move_to(Exited), "an ended agent does not end again");
        assert!(Created.can_start() && Killed.can_start() && !Running.can_start());
        assert_eq!(Exited.event(), "exit");
        assert!(Running.can_move_to(Paused) && Paused.can_move_to(Running) && Paused.can_move_to(Killed));
        assert!(!Starting.can_move_to(Paused) && !Paused.can_start(), "only a running agent pauses");
    }

    #[test]
    fn task_moves() {
        use TaskState::*;
        assert!(Pending.can_move_to(Staging) && Running.can_move_to(Provisioning));
        assert!(Completing.can_move_to(Completed) && Running.can_move_to(Failed));
        assert!(
            !Pending.can_move_to(Running)
                && !Completed.can_move_to(Failed)
                && !Cancelled.can_move_to(Staging)
        );
    }
}
