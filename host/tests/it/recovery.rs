//! The bot's encryption identity beyond its store, on a real Synapse: the
//! `surfaces` binary sets recovery up (`surfaces recovery new`), loses its
//! store, and comes back as a new device of the same identity that reads
//! what was sent to its earlier one. Nothing here is mocked.

use std::path::Path;
use std::process::Command;

use matrix_sdk::Client;
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, MatrixUserIdentifier, Password, UserIdentifier,
};
use matrix_sdk::ruma::{OwnedDeviceId, UserId};
use surfaces_tests::synapse::Synapse;

use super::matrix::{
    Agent, BOT_PASSWORD, Bot, Human, PATIENCE, bot_config_with, file_bytes, relaxed, replies_to,
    send_file, sha256_hex,
};

/// `surfaces recovery new`, as an operator runs it; the key it printed.
fn recovery_new(synapse: &Synapse, data: &Path, config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .args(["recovery", "new", "--config"])
        .arg(config)
        .env("SURFACES_DATA_DIR", data)
        .env("MATRIX_HOMESERVER", synapse.url())
        .env("MATRIX_USER", "bot")
        .env("MATRIX_PASSWORD", BOT_PASSWORD)
        .output()
        .expect("run surfaces recovery new");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The key is the one indented line: groups of four base58 characters.
    let key = stdout
        .lines()
        .find(|l| l.starts_with("    "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    assert!(
        key.split(' ').count() == 12 && stdout.contains("MATRIX_RECOVERY_KEY"),
        "{stdout}"
    );
    key
}

/// The bot's device, as its saved session names it.
fn bot_device(data: &Path) -> OwnedDeviceId {
    let text = std::fs::read_to_string(data.join("matrix/session.json")).expect("a session");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["device_id"].as_str().expect("a device id").into()
}

/// Alice's own cross-signing keys, so she can verify others (Synapse asks
/// for her password unless it is the first upload).
pub(super) async fn cross_sign(client: &Client, user: &str) {
    let encryption = client.encryption();
    if let Err(e) = encryption.bootstrap_cross_signing(None).await {
        let info = e.as_uiaa_response().expect("only a password is asked for");
        let mut password = Password::new(
            UserIdentifier::Matrix(MatrixUserIdentifier::new(user.to_string())),
            format!("{user}-password"),
        );
        password.session = info.session.clone();
        encryption
            .bootstrap_cross_signing(Some(AuthData::Password(password)))
            .await
            .expect("cross-signing with the password");
    }
}

/// The bot's cross-signing identity as `human`'s client sees it now (a
/// keys query).
pub(super) async fn bot_identity(human: &Human, bot_id: &UserId) -> UserIdentity {
    human
        .client
        .encryption()
        .request_user_identity(bot_id)
        .await
        .expect("keys query")
        .expect("the bot has a cross-signing identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_recovery_key_a_bot_whose_store_was_lost_keeps_its_identity_and_reads_what_its_earlier_device_got()
 {
    let synapse = Synapse::start(relaxed());
    synapse.register("bot", BOT_PASSWORD, false);
    let agent = Agent::start(&["--chunks", "2", "--chunk-delay-ms", "50"]);
    let data = tempfile::tempdir().expect("tempdir");
    let config_path = data.path().join("surfaces.toml");
    std::fs::write(&config_path, bot_config_with("", "")).expect("config");
    // The operator sets recovery up once, and keeps the key elsewhere.
    let key = recovery_new(&synapse, data.path(), &config_path);
    // A file waits for its text as long as the test needs.
    let config = bot_config_with(
        &format!("recovery_key = \"{key}\"\n"),
        "attachment_wait_ms = 600000",
    );
    let mut bot = Bot::start(&synapse, data.path(), &agent, &config);
    let alice = Human::login(&synapse, "alice").await;
    cross_sign(&alice.client, "alice").await;
    bot.wait_first_syncs(1).await;
    assert!(
        bot.log()
            .contains("recovery: the bot's identity and backup key are here"),
        "{}",
        bot.log()
    );
    let bot_id = UserId::parse("@bot:localhost").expect("user id");
    let room = alice.dm(&bot_id).await;
    let first = "a question for the bot's first device";
    alice.send(&room, first).await;
    alice.wait_answer(&room, first, &bot).await;
    // Alice verifies the bot's identity.
    let identity = bot_identity(&alice, &bot_id).await;
    identity.verify().await.expect("Alice verifies the bot");
    let master = identity.master_key().get_first_key().map(|k| k.to_base64());
    let earlier = bot_device(data.path());

    // An image, its question still to come: the bot holds it (a command
    // after it is answered, so the bot has read past it).
    let image = file_bytes(7, 2_000);
    send_file(&room, "before.png", &mime::IMAGE_PNG, image.clone(), None).await;
    let status = alice.send(&room, "!status").await;
    alice
        .wait_for(
            "the status",
            || bot.log(),
            |all| {
                all.iter()
                    .any(|s| s.sender == "@bot:localhost" && replies_to(&s.content, &status))
            },
        )
        .await;
    // A stop (the room keys it got go to the backup first), and the store
    // is lost; the database stays, so the held image is still owed.
    bot.stop();
    assert!(
        !bot.log().contains("grace period over"),
        "a file waiting for its text does not hold the stop up:\n{}",
        bot.log()
    );
    std::fs::remove_dir_all(data.path().join("matrix")).expect("lose the store");
    bot.spawn();
    // The question comes: the image goes with it, which only the key its
    // earlier device got, restored from the backup, can decrypt.
    let question = "what was in the picture I sent before?";
    alice.send(&room, question).await;
    let seen = format!(
        "{question}\n\n📎 before.png (image/png, 2000 bytes, sha256 {})",
        sha256_hex(&image)
    );
    alice.wait_answer(&room, &seen, &bot).await;
    let log = bot.log();
    assert!(
        log.contains("this new device took back the bot's identity"),
        "{log}"
    );
    let now = bot_device(data.path());
    assert_ne!(now, earlier, "a new device");

    // To Alice the bot is who it was, still verified, and its new device
    // is signed by it: verified too, without her doing anything.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let identity = bot_identity(&alice, &bot_id).await;
        assert_eq!(
            identity.master_key().get_first_key().map(|k| k.to_base64()),
            master,
            "the same identity"
        );
        assert!(identity.is_verified(), "still verified by Alice");
        let device = alice
            .client
            .encryption()
            .get_device(&bot_id, &now)
            .await
            .expect("devices");
        if device.as_ref().is_some_and(|d| d.is_verified()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new device {now} is not verified for Alice: {device:?}\n{log}"
        );
        alice.next_sync().await;
    }

    // A wrong key on a lost store stops the start, in words: the bot would
    // otherwise run unsigned and deaf to what its earlier devices got.
    bot.stop();
    std::fs::remove_dir_all(data.path().join("matrix")).expect("lose the store again");
    let wrong = "EsTj 3yST y93F SLpB jJsz eAXc 2XzA ygD3 w69H fGaN TKBj jXEd";
    std::fs::write(
        data.path().join("surfaces.toml"),
        bot_config_with(&format!("recovery_key = \"{wrong}\"\n"), ""),
    )
    .expect("config");
    bot.spawn();
    let status = bot.wait_exit();
    assert!(!status.success(), "a wrong key does not start");
    assert!(
        bot.log()
            .contains("does not open this account's secret storage"),
        "{}",
        bot.log()
    );
}
