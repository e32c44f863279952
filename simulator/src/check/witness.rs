//! A broken rule's witness: the steps of the transcript that involve the
//! events and requests the rule names, and the requests those steps lead
//! to, so that a failure reads as a short story instead of a bare
//! "failed".

use std::collections::BTreeSet;

use crate::world::Run;

/// At most this many steps of a witness are printed: the first and the
/// last halves, with the count of those left out between.
const MAX_STEPS: usize = 24;

/// The transcript steps (numbered as in the full transcript) that witness
/// `violation`.
pub fn witness(run: &Run, violation: &str) -> Vec<String> {
    let mut named: BTreeSet<&str> = ids(violation).collect();
    if named.is_empty() {
        return Vec::new();
    }
    // One step further when that is short: the requests and events that
    // the steps about the named ids mention (a message's submit, the sends
    // of its answer).
    let first: Vec<&String> = run
        .transcript
        .iter()
        .filter(|line| ids(line).any(|id| named.contains(id)))
        .collect();
    if first.len() < MAX_STEPS / 2 {
        for line in first {
            named.extend(ids(line));
        }
    }
    let steps: Vec<String> = run
        .transcript
        .iter()
        .enumerate()
        .filter(|(_, line)| ids(line).any(|id| named.contains(id)))
        .map(|(n, line)| format!("{:>5} {line}", n + 1))
        .collect();
    if steps.len() <= MAX_STEPS {
        return steps;
    }
    let half = MAX_STEPS / 2;
    let mut out = steps[..half].to_vec();
    out.push(format!("      … {} steps …", steps.len() - MAX_STEPS));
    out.extend_from_slice(&steps[steps.len() - half..]);
    out
}

/// Event ids (`$e12`) and request ids (`#12`) in a line of text.
fn ids(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '$' | '#' | '_')))
        .filter(|w| {
            let mut chars = w.chars();
            matches!(chars.next(), Some('$' | '#'))
                && w.len() > 1
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}
