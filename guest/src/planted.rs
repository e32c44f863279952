//! Bugs planted on purpose, to prove the simulator catches them: each is a
//! mistake this product made or could make. They exist only in a build
//! with the `planted` feature (never the shipped guest), where the setting
//! `planted = NAME` switches one on; without the feature [`on`] is `false`
//! and the compiler removes every planted branch.

/// A planted bug, by the mistake it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// After a restart only contexts with a request in flight start again:
    /// a queue with nothing in flight is stranded.
    StrandedQueue,
    /// An update refused with 429 counts as shown: a final edit is lost.
    FinalEditDroppedOn429,
    /// A first send tried again gets a new transaction id: if the first
    /// try landed, the part is posted twice.
    RetryPostsTwice,
    /// A reply split in parts skips a character at each cut.
    SplitLosesChar,
    /// Edits are not throttled.
    ThrottleOff,
    /// Answers leave the thread they were asked in.
    WrongThread,
    /// An answer replies to the next queued message, not its own.
    WrongMessage,
    /// Queue positions are counted from two.
    QueuePositionSkipped,
    /// A reply's tokens are not added to its sender's total.
    TokensNotCounted,
    /// A person is greeted until a first reply of theirs ends.
    GreetingTwice,
    /// Edits name the previous edit, not the original.
    EditOfEdit,
    /// An update refused with 429 is tried again at once, not after the
    /// homeserver's `retry_after_ms`.
    RetryAfterIgnored,
    /// Links in an agent's text keep any scheme (`javascript:` too).
    UnsafeLinks,
    /// Edits are not counted against the message's edit budget.
    EditBudgetIgnored,
    /// A withdrawn question is told so but stays in its queue.
    WithdrawnStillSent,
    /// An edit of a question already answered is not asked again.
    EditNotReasked,
    /// Collecting messages into one loses the text of the head.
    CollectDropsOne,
    /// A user with a quota may have replies written in several contexts
    /// at once: each started under the limit, together they pass it.
    QuotaIgnoresInFlight,
    /// A file waiting for its sender's text is dropped when the text
    /// comes: the text goes without it.
    HeldFileDropped,
    /// A file its sender deleted while it waited still goes with their
    /// next text.
    DeletedFileSent,
    /// A file of the agent's the homeserver refuses for good is dropped
    /// without a word.
    AgentFileLostSilently,
    /// A final text waits for the edit interval, as intermediate edits do.
    FinalWaitsInterval,
    /// Intermediate edits spend the homeserver's whole rate budget,
    /// leaving nothing for the final text.
    FinalsUnreserved,
}

impl Bug {
    pub const ALL: [Bug; 23] = [
        Bug::StrandedQueue,
        Bug::FinalEditDroppedOn429,
        Bug::RetryPostsTwice,
        Bug::SplitLosesChar,
        Bug::ThrottleOff,
        Bug::WrongThread,
        Bug::WrongMessage,
        Bug::QueuePositionSkipped,
        Bug::TokensNotCounted,
        Bug::GreetingTwice,
        Bug::EditOfEdit,
        Bug::RetryAfterIgnored,
        Bug::UnsafeLinks,
        Bug::EditBudgetIgnored,
        Bug::WithdrawnStillSent,
        Bug::EditNotReasked,
        Bug::CollectDropsOne,
        Bug::QuotaIgnoresInFlight,
        Bug::HeldFileDropped,
        Bug::DeletedFileSent,
        Bug::AgentFileLostSilently,
        Bug::FinalWaitsInterval,
        Bug::FinalsUnreserved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::StrandedQueue => "stranded-queue",
            Bug::FinalEditDroppedOn429 => "final-edit-dropped-on-429",
            Bug::RetryPostsTwice => "retry-posts-twice",
            Bug::SplitLosesChar => "split-loses-char",
            Bug::ThrottleOff => "throttle-off",
            Bug::WrongThread => "wrong-thread",
            Bug::WrongMessage => "wrong-message",
            Bug::QueuePositionSkipped => "queue-position-skipped",
            Bug::TokensNotCounted => "tokens-not-counted",
            Bug::GreetingTwice => "greeting-twice",
            Bug::EditOfEdit => "edit-of-edit",
            Bug::RetryAfterIgnored => "retry-after-ignored",
            Bug::UnsafeLinks => "unsafe-links",
            Bug::EditBudgetIgnored => "edit-budget-ignored",
            Bug::WithdrawnStillSent => "withdrawn-still-sent",
            Bug::EditNotReasked => "edit-not-reasked",
            Bug::CollectDropsOne => "collect-drops-one",
            Bug::QuotaIgnoresInFlight => "quota-ignores-in-flight",
            Bug::HeldFileDropped => "held-file-dropped",
            Bug::DeletedFileSent => "deleted-file-sent",
            Bug::AgentFileLostSilently => "agent-file-lost-silently",
            Bug::FinalWaitsInterval => "final-waits-interval",
            Bug::FinalsUnreserved => "finals-unreserved",
        }
    }
}

#[cfg(feature = "planted")]
mod switch {
    use std::cell::Cell;

    use super::Bug;

    thread_local! {
        static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
    }

    pub fn set(name: &str) -> Result<(), String> {
        let bug = Bug::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| format!("planted: no bug named {name:?}"))?;
        ACTIVE.with(|a| a.set(Some(bug)));
        Ok(())
    }

    pub fn on(bug: Bug) -> bool {
        ACTIVE.with(|a| a.get() == Some(bug))
    }
}

/// Whether `bug` is switched on (never, without the `planted` feature).
#[inline(always)]
pub fn on(bug: Bug) -> bool {
    #[cfg(feature = "planted")]
    {
        switch::on(bug)
    }
    #[cfg(not(feature = "planted"))]
    {
        let _ = bug;
        false
    }
}

/// Takes the `planted` setting out of the settings and switches its bug
/// on. Without the feature the setting stays, and the guest logs it as
/// unknown and ignores it.
pub fn take_setting(settings: &mut Vec<(String, String)>) -> Result<(), String> {
    #[cfg(feature = "planted")]
    if let Some(i) = settings.iter().position(|(k, _)| k == "planted") {
        let (_, name) = settings.remove(i);
        switch::set(name.trim())?;
    }
    let _ = settings;
    Ok(())
}
