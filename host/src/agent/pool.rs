//! One agent connection per context id, opened on first use.
//!
//! The guest names the context of each request (`shared`, a room, a
//! thread). The pool opens a connection per context, keeps at most `max`
//! open, closes the least recently used idle one to make room, and closes
//! per-room/thread connections that have been idle for `idle_close` (the
//! shared one stays open).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use surfaces_embed::{
    AgentError, AgentErrorKind, AgentFeedback, AgentMessage, AgentStatus, ConnectionState, Event,
};
use tokio::time::Instant;

use super::client::{self, AgentHandle, ClientConfig, Command};
use crate::channels::{EventSender, InboundSender};

/// The context that is never closed for idleness.
pub const SHARED: &str = "shared";

struct Entry {
    handle: AgentHandle,
    /// Request in flight or waiting on this connection.
    busy: Option<u64>,
    last_used: Instant,
    /// The guest was told this connection is down (it waits for `ready`
    /// before submitting again): it must not be closed quietly, or the
    /// guest would wait for ever.
    down: bool,
}

pub struct AgentPool {
    config: ClientConfig,
    max: usize,
    idle_close: Duration,
    /// The pool's own refusals (it runs inside the loop: never waits).
    events: EventSender,
    /// The connections' events (they wait when the loop is behind).
    inbound: InboundSender,
    conns: HashMap<String, Entry>,
    /// Shutting down: no new connections.
    closed: bool,
    /// Requests cut by the shutdown whose failure the guest has not seen.
    cut: HashSet<u64>,
}

impl AgentPool {
    pub fn new(
        config: ClientConfig,
        max: usize,
        idle_close: Duration,
        events: EventSender,
        inbound: InboundSender,
    ) -> Self {
        AgentPool {
            config,
            max: max.max(1),
            idle_close,
            events,
            inbound,
            conns: HashMap::new(),
            closed: false,
            cut: HashSet::new(),
        }
    }

    /// Connections open (or opening).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Requests in flight, over all connections (and, at shutdown, those
    /// cut whose failure has not reached the guest yet).
    pub fn in_flight(&self) -> usize {
        self.conns.values().filter(|e| e.busy.is_some()).count() + self.cut.len()
    }

    /// Open the connection for `context_id` now (the shared one at start).
    pub fn open(&mut self, context_id: &str) -> bool {
        self.entry(context_id).is_some()
    }

    pub fn submit(&mut self, context_id: &str, request: u64, message: AgentMessage) {
        if self.closed {
            let _ = self.events.send(Event::AgentError(AgentError {
                request,
                kind: AgentErrorKind::Disconnected,
                message: "the bot is shutting down".into(),
            }));
            let _ = self.events.send(Event::AgentStatus(AgentStatus {
                context_id: context_id.to_string(),
                state: ConnectionState::Disconnected,
                context_tokens: None,
                detail: Some("the bot is shutting down".into()),
            }));
            return;
        }
        let Some(entry) = self.entry(context_id) else {
            let _ = self.events.send(Event::AgentError(AgentError {
                request,
                kind: AgentErrorKind::Busy,
                message: format!(
                    "all {} agent connections are busy; try again shortly",
                    self.max
                ),
            }));
            return;
        };
        entry.busy = Some(request);
        entry.last_used = Instant::now();
        if !entry.handle.send(Command::Submit { request, message }) {
            // The task ended (it only does when closed): start over.
            self.conns.remove(context_id);
            let _ = self.events.send(Event::AgentError(AgentError {
                request,
                kind: AgentErrorKind::Disconnected,
                message: "the agent connection was closed".into(),
            }));
        }
    }

    pub fn cancel(&mut self, context_id: &str) {
        if let Some(entry) = self.conns.get(context_id) {
            entry.handle.send(Command::Cancel);
        }
    }

    /// Feedback goes only to a connection that is open: it never opens one.
    pub fn feedback(&mut self, context_id: &str, feedback: AgentFeedback) {
        if let Some(entry) = self.conns.get(context_id) {
            entry.handle.send(Command::Feedback(feedback));
        }
    }

    pub fn reset(&mut self, context_id: &str) {
        if let Some(entry) = self.entry(context_id) {
            entry.last_used = Instant::now();
            entry.handle.send(Command::Reset);
        }
    }

    /// Note how a request ended and what the guest was told about each
    /// connection (the pool sees every agent event).
    pub fn observe(&mut self, event: &Event) {
        if let Event::AgentStatus(s) = event
            && let Some(entry) = self.conns.get_mut(&s.context_id)
        {
            entry.down = s.state == ConnectionState::Disconnected;
        }
        // Otherwise only the end of a request matters here.
        let Some(request) = surfaces_embed::ended_request(event) else {
            return;
        };
        self.cut.remove(&request);
        if let Some(entry) = self.conns.values_mut().find(|e| e.busy == Some(request)) {
            entry.busy = None;
            entry.last_used = Instant::now();
        }
    }

    /// Close per-room/thread connections idle for longer than the limit.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let idle_close = self.idle_close;
        self.conns.retain(|context_id, e| {
            let keep = context_id == SHARED
                || e.busy.is_some()
                || e.down
                || now.duration_since(e.last_used) < idle_close;
            if !keep {
                tracing::debug!(context = %context_id, "closing an idle agent connection");
                e.handle.send(Command::Close);
            }
            keep
        });
    }

    /// Close every connection and open no more (shutdown). Requests in
    /// flight fail with `disconnected`, so the guest marks their replies
    /// incomplete; later submits are refused the same way.
    pub fn close_all(&mut self) {
        self.closed = true;
        for (_, e) in self.conns.drain() {
            if let Some(request) = e.busy {
                self.cut.insert(request);
            }
            e.handle.send(Command::Shutdown);
        }
    }

    fn entry(&mut self, context_id: &str) -> Option<&mut Entry> {
        if self.closed {
            return None;
        }
        if !self.conns.contains_key(context_id) {
            if self.conns.len() >= self.max && !self.evict() {
                return None;
            }
            let handle = client::spawn(
                context_id.to_string(),
                self.config.clone(),
                self.inbound.clone(),
            );
            self.conns.insert(
                context_id.to_string(),
                Entry {
                    handle,
                    busy: None,
                    last_used: Instant::now(),
                    down: false,
                },
            );
        }
        self.conns.get_mut(context_id)
    }

    /// Close the least recently used idle connection; false if none is idle.
    fn evict(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(id, e)| e.busy.is_none() && !e.down && id.as_str() != SHARED)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(id, _)| id.clone());
        match victim.and_then(|id| self.conns.remove(&id)) {
            Some(e) => {
                e.handle.send(Command::Close);
                true
            }
            None => false,
        }
    }
}
