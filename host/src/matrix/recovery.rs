//! The bot's encryption identity outliving its store: secret storage and
//! server-side key backup, opened by a recovery key the operator keeps
//! outside the data directory (matrix-sdk's `Recovery`).
//!
//! `surfaces recovery new` sets both up (or replaces the key) and prints
//! the key once. At every start with the key configured, a store that lost
//! its secrets (wiped, or a new device) takes them back from the server:
//! the cross-signing keys, so the new device is signed by the bot's same
//! identity (whoever verified the bot still sees it verified), and the
//! backup key, so the room keys of its earlier devices are downloaded and
//! what was sent to them can be read. From then on each new room key goes
//! to the backup, and a stop waits (a little) for the upload.

use std::future::IntoFuture;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::encryption::recovery::RecoveryState;

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "the recovery key (matrix.recovery_key, MATRIX_RECOVERY_KEY) does not open this \
         account's secret storage: {0}. Check the key; `surfaces recovery new` makes a new one \
         (the old one then opens nothing)"
    )]
    WrongKey(String),
    #[error(
        "recovery is set up on this account, but this device lacks its secrets: start the bot \
         once with the recovery key (MATRIX_RECOVERY_KEY) so it takes them back, then run this \
         again for a new key"
    )]
    Incomplete,
    #[error("cannot set up recovery: {0}")]
    Setup(String),
}

/// What a start found and did; logged by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The secrets are here: room keys go to the backup.
    Enabled,
    /// The store had lost them: taken back with the key.
    Recovered,
    /// The account has secret storage, the bot was not given its key.
    NoKey,
    /// Recovery is not set up on the account.
    NotSetUp,
}

/// At a start: take the account's secrets back if this store lacks them
/// and the key is configured. A key that does not open them stops the
/// start (the bot would run unsigned and deaf to its history).
pub async fn on_start(client: &Client, key: Option<&Secret>) -> Result<Started, RecoveryError> {
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    let recovery = encryption.recovery();
    let started = match (recovery.state(), key) {
        (RecoveryState::Enabled, _) => Started::Enabled,
        (RecoveryState::Incomplete, Some(key)) => {
            // Imports the cross-signing keys (signing this device) and the
            // backup key; with `BackupDownloadStrategy::OneShot` the room
            // keys are downloaded before this returns.
            recovery
                .recover(key.expose())
                .await
                .map_err(|e| RecoveryError::WrongKey(e.to_string()))?;
            Started::Recovered
        }
        (RecoveryState::Incomplete, None) => Started::NoKey,
        (RecoveryState::Disabled | RecoveryState::Unknown, _) => Started::NotSetUp,
    };
    match (started, key) {
        (Started::Enabled, _) => tracing::info!(
            "recovery: the bot's identity and backup key are here; room keys go to the backup"
        ),
        (Started::Recovered, _) => tracing::info!(
            "recovery: this new device took back the bot's identity and backup key with the \
             recovery key; room keys of earlier devices restored from the backup"
        ),
        (Started::NoKey, _) => tracing::warn!(
            "recovery is set up on this account but no recovery key was given \
             (matrix.recovery_key, MATRIX_RECOVERY_KEY): this device is not signed by the bot's \
             identity and cannot read what was sent to its earlier devices"
        ),
        (Started::NotSetUp, Some(_)) => tracing::warn!(
            "a recovery key is configured, but recovery is not set up on this account: run \
             `surfaces recovery new` (the key given is not used)"
        ),
        (Started::NotSetUp, None) => tracing::debug!(
            "recovery is not set up: a lost store loses the bot's identity (`surfaces recovery \
             new`)"
        ),
    }
    Ok(started)
}

/// A new recovery key: secret storage and a key backup created if the
/// account has none, or a new key for them (the old one opens nothing
/// after). Waits until the room keys this store holds are in the backup.
pub async fn new_key(client: &Client) -> Result<String, RecoveryError> {
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    let recovery = encryption.recovery();
    let setup =
        |e: matrix_sdk::encryption::recovery::RecoveryError| RecoveryError::Setup(e.to_string());
    match recovery.state() {
        RecoveryState::Enabled => recovery.reset_key().await.map_err(setup),
        RecoveryState::Incomplete => Err(RecoveryError::Incomplete),
        RecoveryState::Disabled | RecoveryState::Unknown => recovery
            .enable()
            .wait_for_backups_to_upload()
            .await
            .map_err(setup),
    }
}

/// At a stop: give the room keys received last a moment to reach the
/// backup (a store lost right after would otherwise lose them).
pub async fn settle(client: &Client, at_most: Duration) {
    let backups = client.encryption().backups();
    if !backups.are_enabled().await {
        return;
    }
    match tokio::time::timeout(at_most, backups.wait_for_steady_state().into_future()).await {
        Ok(Ok(())) => tracing::debug!("room keys are in the backup"),
        Ok(Err(e)) => tracing::warn!("room keys may not all be in the backup: {e}"),
        Err(_) => tracing::warn!(
            "room keys were still going to the backup after {at_most:?}: the rest go at the next \
             start"
        ),
    }
}
