//! When the loop falls behind, agent chunks pile up in its channel. The
//! chunks of one request that follow each other are handed to the guest as
//! one: one guest call and one store transaction instead of many, so a
//! loop that is behind catches up instead of falling further back.

use surfaces_embed::Event;

/// The most text one merged chunk carries.
pub const MAX_MERGED_BYTES: usize = 64 * 1024;

/// `first`, with the chunks of the same request that `next` yields right
/// after it merged in; and the first event that did not merge, to be
/// handled right after. Only adjacent chunks merge: the order of events is
/// kept.
pub fn coalesce(first: Event, mut next: impl FnMut() -> Option<Event>) -> (Event, Option<Event>) {
    let Event::AgentChunk(mut merged) = first else {
        return (first, None);
    };
    while merged.text.len() < MAX_MERGED_BYTES {
        match next() {
            Some(Event::AgentChunk(c)) if c.request == merged.request => {
                merged.text.push_str(&c.text);
            }
            other => return (Event::AgentChunk(merged), other),
        }
    }
    (Event::AgentChunk(merged), None)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use surfaces_embed::{AgentChunk, AgentEnd, Event};

    use super::coalesce;

    fn chunk(request: u64, text: &str) -> Event {
        Event::AgentChunk(AgentChunk {
            request,
            text: text.into(),
        })
    }

    fn end(request: u64) -> Event {
        Event::AgentEnd(AgentEnd {
            request,
            tokens_used: 1,
        })
    }

    /// Everything in `queue`, as the loop would hand it to the guest.
    fn drain(mut queue: VecDeque<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(first) = queue.pop_front() {
            let (event, after) = coalesce(first, || queue.pop_front());
            out.push(event);
            out.extend(after);
        }
        out
    }

    #[test]
    fn adjacent_chunks_of_one_request_merge_and_order_is_kept() {
        let queue = VecDeque::from(vec![
            chunk(1, "a"),
            chunk(1, "b"),
            chunk(2, "x"),
            chunk(1, "c"),
            chunk(1, "d"),
            end(1),
            chunk(2, "y"),
        ]);
        assert_eq!(
            drain(queue),
            vec![
                chunk(1, "ab"),
                chunk(2, "x"),
                chunk(1, "cd"),
                end(1),
                chunk(2, "y"),
            ]
        );
    }

    #[test]
    fn a_merged_chunk_stops_growing_at_the_cap() {
        let piece = "z".repeat(40 * 1024);
        let queue = VecDeque::from(vec![chunk(1, &piece), chunk(1, &piece), chunk(1, &piece)]);
        let out = drain(queue);
        let sizes: Vec<usize> = out
            .iter()
            .map(|e| match e {
                Event::AgentChunk(c) => c.text.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![80 * 1024, 40 * 1024]);
    }
}
