//! The agent client's rules, for every sequence of things that can happen
//! on a connection.

use std::collections::BTreeMap;

use proptest::prelude::*;
use surfaces_embed::{Action, AgentMessage, AgentSession, Event, Link, Sender};
use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};

#[derive(Clone, Debug)]
enum Input {
    Submit,
    Cancel,
    Reset,
    Connecting,
    Frame(ServerFrame),
    Garbage,
    Stalled,
    Lost,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => Just(Input::Submit),
        1 => Just(Input::Cancel),
        1 => Just(Input::Reset),
        1 => Just(Input::Connecting),
        2 => Just(Input::Frame(ServerFrame::Status {
            state: proto::AgentState::Ready,
            agent_id: None,
            context_tokens: Some(3),
        })),
        3 => "[a-z ]{0,5}".prop_map(|text| Input::Frame(ServerFrame::AgentEventTextChunk { text })),
        1 => prop_oneof![
            Just("data:image/png;base64,AQID".to_string()),
            Just("https://example.org/a.png".to_string()),
            Just("data:image/png;base64,AAAAAAAAAAAA".to_string()),
        ]
        .prop_map(|url| Input::Frame(ServerFrame::AgentEventAttachment {
            name: "a.png".into(),
            mime: "image/png".into(),
            url,
        })),
        2 => Just(Input::Frame(ServerFrame::AgentEventEnd { tokens_used: 7 })),
        1 => Just(Input::Frame(ServerFrame::Error {
            code: proto::ErrorCode::Internal,
            message: "boom".into(),
        })),
        1 => Just(Input::Garbage),
        1 => Just(Input::Stalled),
        1 => Just(Input::Lost),
    ]
}

fn message(text: &str) -> AgentMessage {
    AgentMessage {
        text: text.into(),
        sender: Sender {
            id: "@a:x".into(),
            display_name: None,
        },
        skills: Vec::new(),
        attachments: Vec::new(),
    }
}

/// Terminal events per request, and what the fake agent has been asked.
#[derive(Default)]
struct Seen {
    ended: BTreeMap<u64, u32>,
    /// The request the agent is answering (sent, not yet ended).
    on_the_wire: Option<u64>,
}

impl Seen {
    fn take(
        &mut self,
        out: &mut Vec<Action>,
        sent_ids: &mut Vec<u64>,
    ) -> Result<(), TestCaseError> {
        for action in out.drain(..) {
            match action {
                Action::Deliver(Event::AgentEnd(e)) => {
                    *self.ended.entry(e.request).or_default() += 1
                }
                Action::Deliver(Event::AgentError(e)) => {
                    *self.ended.entry(e.request).or_default() += 1
                }
                Action::Deliver(Event::AgentChunk(c)) => {
                    prop_assert!(
                        !self.ended.contains_key(&c.request),
                        "chunk after the end of #{}",
                        c.request
                    );
                }
                Action::Deliver(_) => {}
                Action::Keep { request, bytes, .. } => {
                    prop_assert!(
                        !self.ended.contains_key(&request),
                        "a file after the end of #{request}"
                    );
                    prop_assert!(bytes.len() <= 8, "a file over the limit was kept");
                }
                Action::Send(ClientFrame::UserMessage { text, .. }) => {
                    let id: u64 = text.parse().map_err(|_| TestCaseError::fail("bad text"))?;
                    sent_ids.push(id);
                    self.on_the_wire = Some(id);
                }
                Action::Send(_) => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn every_request_ends_exactly_once_and_one_is_in_flight(inputs in proptest::collection::vec(input(), 0..60)) {
        let mut session = AgentSession::new("shared").with_max_attachment_bytes(8);
        let mut out = Vec::new();
        let mut seen = Seen::default();
        let mut sent = Vec::new();
        let mut next = 0u64;
        for input in inputs {
            match input {
                Input::Submit => {
                    next += 1;
                    // One request in flight: a submit while one is live on
                    // the wire (not drained) must not reach the agent.
                    session.submit(next, message(&next.to_string()), &mut out);
                }
                Input::Cancel => session.cancel(&mut out),
                Input::Reset => session.reset(&mut out),
                Input::Connecting => {
                    if session.link() == Link::Down {
                        session.connecting(&mut out);
                    }
                }
                Input::Frame(frame) => {
                    let text = proto::encode_server(&frame);
                    if session.on_text(&text, &mut out).is_err() {
                        session.lost("broken", None, &mut out);
                    }
                }
                Input::Garbage => {
                    if session.on_text("{not json", &mut out).is_err() {
                        session.lost("broken", None, &mut out);
                    }
                }
                Input::Stalled => {
                    if session.stalled("stalled", &mut out).is_err() {
                        session.lost("broken", None, &mut out);
                    }
                }
                Input::Lost => session.lost("lost", None, &mut out),
            }
            let before = seen.on_the_wire;
            let sent_before = sent.len();
            seen.take(&mut out, &mut sent)?;
            if sent.len() > sent_before {
                // A new request went out: the previous one had ended.
                if let Some(prev) = before.filter(|p| Some(*p) != sent.last().copied()) {
                    prop_assert!(seen.ended.contains_key(&prev), "#{} sent while #{prev} was live", sent.last().copied().unwrap_or(0));
                }
            }
        }
        session.lost("closing", None, &mut out);
        seen.take(&mut out, &mut sent)?;
        for id in 1..=next {
            prop_assert_eq!(seen.ended.get(&id).copied(), Some(1), "request #{} must end exactly once", id);
        }
        prop_assert!(session.is_idle());
    }
}

#[test]
fn a_submit_while_connecting_goes_out_with_the_first_status() {
    let mut session = AgentSession::new("shared");
    let mut out = Vec::new();
    session.connecting(&mut out);
    session.submit(1, message("1"), &mut out);
    assert!(!out.iter().any(|a| matches!(a, Action::Send(_))));
    out.clear();
    let status = proto::encode_server(&ServerFrame::Status {
        state: proto::AgentState::Ready,
        agent_id: None,
        context_tokens: None,
    });
    session.on_text(&status, &mut out).expect("status is fine");
    assert!(matches!(out[0], Action::Deliver(Event::AgentStatus(_))));
    assert!(matches!(&out[1], Action::Send(ClientFrame::UserMessage { text, .. }) if text == "1"));
}

#[test]
fn garbage_before_the_first_status_breaks_the_connection() {
    let mut session = AgentSession::new("shared");
    let mut out = Vec::new();
    session.connecting(&mut out);
    let err = session.on_text("nope", &mut out).expect_err("must break");
    assert!(err.0.contains("broke the protocol"), "{err}");
}

fn ready(session: &mut AgentSession, out: &mut Vec<Action>) {
    let status = proto::encode_server(&ServerFrame::Status {
        state: proto::AgentState::Ready,
        agent_id: None,
        context_tokens: None,
    });
    session.on_text(&status, out).expect("status is fine");
}

#[test]
fn a_cancelled_request_that_never_left_ends_at_once() {
    let mut session = AgentSession::new("shared");
    let mut out = Vec::new();
    session.connecting(&mut out);
    session.submit(7, message("7"), &mut out);
    out.clear();
    session.cancel(&mut out);
    assert!(
        matches!(&out[..], [Action::Deliver(Event::AgentEnd(e))] if e.request == 7),
        "{out:?}"
    );
    out.clear();
    ready(&mut session, &mut out);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Send(_))),
        "nothing sent: {out:?}"
    );
}

#[test]
fn a_reset_while_connecting_goes_out_before_the_next_request() {
    let mut session = AgentSession::new("shared");
    let mut out = Vec::new();
    session.connecting(&mut out);
    session.reset(&mut out);
    session.submit(1, message("1"), &mut out);
    out.clear();
    ready(&mut session, &mut out);
    let sent: Vec<&ClientFrame> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            sent[..],
            [ClientFrame::Reset, ClientFrame::UserMessage { .. }]
        ),
        "{sent:?}"
    );
}

#[test]
fn an_unknown_agent_state_is_not_a_broken_connection() {
    let mut session = AgentSession::new("shared");
    let mut out = Vec::new();
    session.connecting(&mut out);
    let frame = r#"{"type": "status", "state": "thinking-hard"}"#;
    session
        .on_text(frame, &mut out)
        .expect("unknown states are ignored");
    assert_eq!(session.link(), Link::Ready);
}

#[test]
fn a_reply_past_the_byte_limit_is_cut_where_it_fits_and_the_rest_dropped() {
    let mut session = AgentSession::new("shared").with_max_reply_bytes(10);
    let mut out = Vec::new();
    session.connecting(&mut out);
    ready(&mut session, &mut out);
    session.submit(1, message("1"), &mut out);
    out.clear();
    let chunk =
        |text: &str| proto::encode_server(&ServerFrame::AgentEventTextChunk { text: text.into() });
    session.on_text(&chunk("héllo "), &mut out).expect("fine");
    // 7 bytes so far; "wörld" would make 13: only what fits, at a char
    // boundary ("wö" is 3 bytes), then the error and a cancel.
    session.on_text(&chunk("wörld"), &mut out).expect("fine");
    session.on_text(&chunk("more"), &mut out).expect("fine");
    let end = proto::encode_server(&ServerFrame::AgentEventEnd { tokens_used: 9 });
    session.on_text(&end, &mut out).expect("fine");
    let texts: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(Event::AgentChunk(c)) => Some(c.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["héllo ", "wö"]);
    let errors: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(Event::AgentError(e)) => Some(e.kind),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![surfaces_embed::AgentErrorKind::TooLong]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Send(ClientFrame::Cancel)))
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Deliver(Event::AgentEnd(_))))
    );
    // The next request starts from nothing.
    out.clear();
    session.submit(2, message("2"), &mut out);
    session.on_text(&chunk("short"), &mut out).expect("fine");
    assert!(out.iter().any(
        |a| matches!(a, Action::Deliver(Event::AgentChunk(c)) if c.request == 2 && c.text == "short")
    ));
}
