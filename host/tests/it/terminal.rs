//! The terminal front end shows a streamed reply growing on one line.

use surfaces_embed::{EditTarget, Event, MatrixEffect, MessageContent};
use surfaces_host::front::FrontEnd;
use surfaces_host::terminal::{ROOM, Terminal};
use tokio::sync::mpsc;

fn content(body: &str, live: bool) -> MessageContent {
    MessageContent {
        body: body.into(),
        formatted_body: None,
        notice: false,
        live,
        thread_root: None,
        reply_to: None,
        mentions: vec![],
    }
}

fn edit(request: u64, of: u64, body: &str, live: bool) -> MatrixEffect {
    MatrixEffect::Edit {
        request,
        room_id: ROOM.into(),
        target: EditTarget::Request(of),
        content: content(body, live),
    }
}

#[test]
fn a_streamed_reply_grows_in_place_and_every_request_is_answered() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut out = Vec::new();
    {
        let mut t = Terminal::new(tx, &mut out);
        t.execute(MatrixEffect::Send {
            request: 1,
            room_id: ROOM.into(),
            content: content("Hel", true),
        });
        t.execute(edit(2, 1, "Hello, wor", true));
        t.execute(edit(3, 1, "Hello, world.", false));
        // A rewrite rather than a continuation is shown whole.
        t.execute(edit(4, 1, "Goodbye.", false));
        // An edit of a message that was never sent fails, as on Matrix.
        t.execute(edit(5, 99, "?", false));
    }
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(text, "bot: Hello, world.\nbot (edited): Goodbye.\n");
    let mut answered = Vec::new();
    while let Ok(Event::MatrixResult(r)) = rx.try_recv() {
        answered.push((r.request, r.outcome.is_ok()));
    }
    assert_eq!(
        answered,
        vec![(1, true), (2, true), (3, true), (4, true), (5, false)]
    );
}
