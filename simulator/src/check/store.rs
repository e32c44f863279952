//! Rules about the guest's store once the world is quiet: read from the
//! store itself, not the transcript (a message stranded in a queue leaves
//! no trace in the room).

use crate::world::Run;

/// Once the world is quiet, no context holds a queued message or a request
/// in flight: read from the guest's store, not the transcript (a message
/// stranded in a queue leaves no trace in the room).
pub fn nothing_waits(run: &Run) -> Vec<String> {
    if !run.settled {
        return Vec::new(); // reported by `settles`
    }
    let mut v = Vec::new();
    for (key, bytes) in run.store.range("ctx/".to_string()..) {
        if !key.starts_with("ctx/") {
            break;
        }
        let Ok(ctx) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            v.push(format!("{key} does not decode"));
            continue;
        };
        let queued: Vec<&str> = ctx
            .get("queue")
            .and_then(|q| q.as_array())
            .into_iter()
            .flatten()
            .map(|m| m.get("event_id").and_then(|e| e.as_str()).unwrap_or("?"))
            .collect();
        if !queued.is_empty() {
            v.push(format!(
                "{key} still has message(s) queued: {}",
                queued.join(", ")
            ));
        }
        if let Some(r) = ctx.get("in_flight").and_then(|r| r.as_u64()) {
            v.push(format!("{key} still has request #{r} in flight"));
        }
    }
    v
}

/// Once the world is quiet, the guest's store holds no work in progress
/// (a reply, a chunk, a pending notice, a timer, a route: the contract's
/// `TRANSIENT` prefixes, which every guest keeps, the SDK's timers too).
/// Any of them left leaked.
pub fn no_leftovers(run: &Run) -> Vec<String> {
    if !run.settled {
        return Vec::new(); // reported by `settles`
    }
    run.store
        .keys()
        .filter(|k| {
            surfaces_contract::TRANSIENT
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|k| format!("store still holds {k}"))
        .collect()
}

/// Each person's token total in the store is the sum of the tokens of
/// every reply of theirs the agent ended.
pub fn tokens_counted(run: &Run) -> Vec<String> {
    if !run.settled {
        return Vec::new();
    }
    let mut expected: std::collections::BTreeMap<&str, (u64, Vec<String>)> = Default::default();
    for s in &run.facts.submits {
        if let Some(t) = run.facts.ended_tokens.get(&s.request) {
            let e = expected.entry(s.sender.as_str()).or_default();
            e.0 += t;
            e.1.push(format!("#{}", s.request));
        }
    }
    let mut v = Vec::new();
    for (who, (tokens, requests)) in expected {
        let key = format!("user/{who}");
        let stored = run
            .store
            .get(&key)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|u| u.get("tokens").and_then(|t| t.as_u64()))
            .unwrap_or(0);
        if stored != tokens {
            v.push(format!(
                "{who}: the agent ended replies worth {tokens} tokens ({}), the store counts {stored}",
                requests.join(", ")
            ));
        }
    }
    v
}
