//! Interactive verification of the bot (SAS emoji) on a real Synapse: an
//! admin verifies it from their client, as Element does for a user (a
//! request in their direct chat); anyone else is refused.

use std::time::Duration;

use futures_util::StreamExt;
use matrix_sdk::encryption::verification::{
    SasState, SasVerification, VerificationRequest, VerificationRequestState,
};
use matrix_sdk::ruma::UserId;
use surfaces_tests::synapse::Synapse;

use super::matrix::{Agent, BOT_PASSWORD, Bot, Human, PATIENCE, bot_config_with, relaxed};
use super::recovery::{bot_identity, cross_sign};

/// The first state of a flow (now, or from `changes`) that `want` picks,
/// within the patience.
async fn reaches<S: std::fmt::Debug>(
    now: S,
    changes: impl futures_util::Stream<Item = S>,
    want: impl Fn(&S) -> bool,
    what: &str,
    log: impl Fn() -> String,
) -> S {
    if want(&now) {
        return now;
    }
    let mut changes = std::pin::pin!(changes);
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(state) = changes.next().await {
            if want(&state) {
                return Some(state);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(state)) => state,
        _ => panic!(
            "the verification never got {what} (it was {now:?})\n{}",
            log()
        ),
    }
}

async fn request_reaches(
    request: &VerificationRequest,
    want: impl Fn(&VerificationRequestState) -> bool,
    what: &str,
    log: impl Fn() -> String,
) -> VerificationRequestState {
    reaches(request.state(), request.changes(), want, what, log).await
}

async fn sas_reaches(
    sas: &SasVerification,
    want: impl Fn(&SasState) -> bool,
    what: &str,
    log: impl Fn() -> String,
) -> SasState {
    reaches(sas.state(), sas.changes(), want, what, log).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_verifies_the_bot_by_emoji_and_anyone_else_is_refused() {
    let synapse = Synapse::start(relaxed());
    synapse.register("bot", BOT_PASSWORD, false);
    let agent = Agent::start(&[]);
    let data = tempfile::tempdir().expect("tempdir");
    // Alice is the admin.
    let bot = Bot::start(&synapse, data.path(), &agent, &bot_config_with("", ""));
    let alice = Human::login(&synapse, "alice").await;
    let bob = Human::login(&synapse, "bob").await;
    cross_sign(&alice.client, "alice").await;
    cross_sign(&bob.client, "bob").await;
    bot.wait_first_syncs(1).await;
    let bot_id = UserId::parse("@bot:localhost").expect("user id");
    let log = || bot.log();

    // Alice, in her direct chat with the bot, asks to verify it.
    let room = alice.dm(&bot_id).await;
    let hello = "hello before we verify";
    alice.send(&room, hello).await;
    alice.wait_answer(&room, hello, &bot).await;
    let identity = bot_identity(&alice, &bot_id).await;
    assert!(!identity.is_verified(), "not verified yet");
    let request = identity
        .request_verification()
        .await
        .expect("a verification request");
    request_reaches(
        &request,
        |s| matches!(s, VerificationRequestState::Ready { .. }),
        "ready (the bot accepted)",
        log,
    )
    .await;
    let sas = request
        .start_sas()
        .await
        .expect("start emoji verification")
        .expect("the bot takes emoji");
    let SasState::KeysExchanged {
        emojis: Some(emojis),
        ..
    } = sas_reaches(
        &sas,
        |s| matches!(s, SasState::KeysExchanged { .. }),
        "its emojis",
        log,
    )
    .await
    else {
        panic!("emoji verification without emoji");
    };
    // Alice compares her emojis with the bot's (in the room and in its
    // log) and confirms.
    let mine = emojis
        .emojis
        .iter()
        .map(|e| format!("{} {}", e.symbol, e.description))
        .collect::<Vec<_>>()
        .join(", ");
    let shown = format!("🔐 Verification: my emojis are {mine}.");
    alice
        .wait_for("the bot's emojis in the room", log, |all| {
            all.iter().any(|s| {
                s.sender == "@bot:localhost"
                    && s.content["body"]
                        .as_str()
                        .is_some_and(|b| b.starts_with(&shown))
            })
        })
        .await;
    assert!(bot.log().contains(&mine), "{}", bot.log());
    sas.confirm().await.expect("Alice confirms");
    sas_reaches(&sas, |s| matches!(s, SasState::Done { .. }), "done", log).await;
    // Her client signs the bot's identity with her own, and says so once
    // the signature is on the server.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if bot_identity(&alice, &bot_id).await.is_verified() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alice has not verified the bot: {:?}\n{}",
            sas.state(),
            bot.log()
        );
        alice.next_sync().await;
    }
    // The bot's side finished too (it logs once it trusts Alice).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !bot
        .log()
        .contains("verified: each side now trusts the other")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", bot.log());
        // Polling the bot's log: its side gives no other signal.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bob is no admin: his request is cancelled.
    let room = bob.dm(&bot_id).await;
    let hi = "hi, I am Bob";
    bob.send(&room, hi).await;
    bob.wait_answer(&room, hi, &bot).await;
    let request = bot_identity(&bob, &bot_id)
        .await
        .request_verification()
        .await
        .expect("a verification request");
    request_reaches(
        &request,
        |s| matches!(s, VerificationRequestState::Cancelled(_)),
        "cancelled",
        log,
    )
    .await;
    assert!(
        bot.log()
            .contains("only admins (matrix.admins) may verify the bot"),
        "{}",
        bot.log()
    );
}
