//! A seed's fault mix: which kinds of fault are on in its world, and how
//! often they strike. Swarm testing: each kind is on in about half the
//! seeds, so a bug that needs some faults and is masked by others still
//! meets a mix that shows it.

use std::fmt;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// A kind of fault a swarm world may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    AgentDisconnectBefore,
    AgentDisconnectDuring,
    AgentDrop,
    AgentBusy,
    AgentMalformed,
    AgentStall,
    AgentSlowStatus,
    AgentContextOverflow,
    AgentInternal,
    Hs429,
    Hs413,
    Hs503,
    HsLostResponse,
    SyncGap,
    SyncDuplicate,
    SyncUnavailable,
    MessageBeforeJoin,
    HostRestart,
    GuestSwap,
    GuestTrap,
    ClockJump,
    /// Not a fault: people react to, edit and delete what they asked.
    SecondThoughts,
}

impl Fault {
    pub const ALL: [Fault; 22] = [
        Fault::AgentDisconnectBefore,
        Fault::AgentDisconnectDuring,
        Fault::AgentDrop,
        Fault::AgentBusy,
        Fault::AgentMalformed,
        Fault::AgentStall,
        Fault::AgentSlowStatus,
        Fault::AgentContextOverflow,
        Fault::AgentInternal,
        Fault::Hs429,
        Fault::Hs413,
        Fault::Hs503,
        Fault::HsLostResponse,
        Fault::SyncGap,
        Fault::SyncDuplicate,
        Fault::SyncUnavailable,
        Fault::MessageBeforeJoin,
        Fault::HostRestart,
        Fault::GuestSwap,
        Fault::GuestTrap,
        Fault::ClockJump,
        Fault::SecondThoughts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::AgentDisconnectBefore => "agent-disconnect-before",
            Fault::AgentDisconnectDuring => "agent-disconnect-during",
            Fault::AgentDrop => "agent-drop",
            Fault::AgentBusy => "agent-busy",
            Fault::AgentMalformed => "agent-malformed",
            Fault::AgentStall => "agent-stall",
            Fault::AgentSlowStatus => "agent-slow-status",
            Fault::AgentContextOverflow => "agent-context-overflow",
            Fault::AgentInternal => "agent-internal",
            Fault::Hs429 => "hs-429",
            Fault::Hs413 => "hs-413",
            Fault::Hs503 => "hs-503",
            Fault::HsLostResponse => "hs-lost-response",
            Fault::SyncGap => "sync-gap",
            Fault::SyncDuplicate => "sync-duplicate",
            Fault::SyncUnavailable => "sync-503",
            Fault::MessageBeforeJoin => "message-before-join",
            Fault::HostRestart => "host-restart",
            Fault::GuestSwap => "guest-swap",
            Fault::GuestTrap => "guest-trap",
            Fault::ClockJump => "clock-jump",
            Fault::SecondThoughts => "second-thoughts",
        }
    }
}

/// The faults on in one world, each with its rate (a probability per
/// chance to strike, or for steps the share of chances taken).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mix {
    pub on: Vec<(Fault, f64)>,
}

impl Mix {
    /// Each kind on with probability one half, at a rate of 5 %, 15 % or
    /// 35 %.
    pub fn draw(rng: &mut ChaCha8Rng) -> Mix {
        let mut on = Vec::new();
        for f in Fault::ALL {
            if rng.random_bool(0.5) {
                let rate = [0.05, 0.15, 0.35][rng.random_range(0..3usize)];
                on.push((f, rate));
            }
        }
        Mix { on }
    }

    /// The rate of a fault, 0 when it is off.
    pub fn rate(&self, f: Fault) -> f64 {
        self.on
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(0.0, |(_, r)| *r)
    }

    pub fn has(&self, f: Fault) -> bool {
        self.rate(f) > 0.0
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.on.is_empty() {
            return write!(f, "no faults");
        }
        let parts: Vec<String> = self
            .on
            .iter()
            .map(|(k, r)| format!("{}@{r}", k.name()))
            .collect();
        write!(f, "{}", parts.join(" "))
    }
}
