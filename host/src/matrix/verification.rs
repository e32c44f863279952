//! Interactive verification (SAS emoji) of the bot, by its admins only.
//!
//! An admin asks from their client (in a room, as Element does to verify a
//! user, or to the bot's device): the bot accepts, takes the SAS method the
//! admin's client starts, shows its seven emojis (in the log, and in the
//! room the request came in) and confirms them; the admin compares them
//! with their own and confirms too, and each side then trusts the other.
//! Anyone else's request is cancelled. matrix-sdk runs the protocol; this
//! module only decides who may and says what it sees.

use std::time::Duration;

use futures_util::StreamExt;
use matrix_sdk::encryption::verification::{
    SasState, SasVerification, Verification, VerificationRequestState,
};
use matrix_sdk::ruma::events::key::verification::VerificationMethod;
use matrix_sdk::ruma::events::key::verification::request::ToDeviceKeyVerificationRequestEvent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedUserId, UserId};
use matrix_sdk::{Client, Room};

/// A verification not done in this long is given up (matrix-sdk's own
/// timeout is ten minutes).
const PATIENCE: Duration = Duration::from_secs(300);

/// Answer verification requests: from `admins` (user ids), and no one else.
pub fn register(client: &Client, admins: Vec<String>) {
    let to_device = admins.clone();
    client.add_event_handler(
        move |ev: ToDeviceKeyVerificationRequestEvent, client: Client| {
            let admins = to_device.clone();
            async move {
                let flow = ev.content.transaction_id.to_string();
                tokio::spawn(answer(client, admins, ev.sender, flow));
            }
        },
    );
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, _room: Room, client: Client| {
            let admins = admins.clone();
            async move {
                if let MessageType::VerificationRequest(_) = &ev.content.msgtype {
                    let flow = ev.event_id.to_string();
                    tokio::spawn(answer(client, admins, ev.sender, flow));
                }
            }
        },
    );
}

fn is_admin(admins: &[String], user: &UserId) -> bool {
    admins.iter().any(|a| a == user.as_str())
}

async fn answer(client: Client, admins: Vec<String>, sender: OwnedUserId, flow: String) {
    if client.user_id() == Some(sender.as_ref()) {
        return;
    }
    let Some(request) = client
        .encryption()
        .get_verification_request(&sender, &flow)
        .await
    else {
        tracing::debug!(%sender, "a verification request matrix-sdk no longer holds");
        return;
    };
    if !is_admin(&admins, &sender) {
        tracing::info!(%sender, "verification request refused: only admins (matrix.admins) may verify the bot");
        if let Err(e) = request.cancel().await {
            tracing::warn!(%sender, "cannot cancel the verification request: {e}");
        }
        return;
    }
    tracing::info!(%sender, "verification request from an admin: accepted (emoji)");
    if let Err(e) = request
        .accept_with_methods(vec![VerificationMethod::SasV1])
        .await
    {
        tracing::warn!(%sender, "cannot accept the verification request: {e}");
        return;
    }
    let flow = async {
        let mut changes = request.changes();
        while let Some(state) = changes.next().await {
            match state {
                VerificationRequestState::Transitioned {
                    verification: Verification::SasV1(sas),
                } => return run_sas(&client, sas).await,
                VerificationRequestState::Transitioned { .. } => {
                    tracing::info!(%sender, "verification by a method the bot does not offer: cancelled");
                    let _ = request.cancel().await;
                    return;
                }
                VerificationRequestState::Done => return,
                VerificationRequestState::Cancelled(info) => {
                    tracing::info!(%sender, reason = info.reason(), "verification cancelled");
                    return;
                }
                VerificationRequestState::Created { .. }
                | VerificationRequestState::Requested { .. }
                | VerificationRequestState::Ready { .. } => {}
            }
        }
    };
    if tokio::time::timeout(PATIENCE, flow).await.is_err() {
        tracing::info!(%sender, "verification not finished in {PATIENCE:?}: given up");
        let _ = request.cancel().await;
    }
}

async fn run_sas(client: &Client, sas: SasVerification) {
    let user = sas.other_user_id().to_owned();
    if let Err(e) = sas.accept().await {
        tracing::warn!(%user, "cannot accept the emoji verification: {e}");
        return;
    }
    let mut changes = sas.changes();
    while let Some(state) = changes.next().await {
        match state {
            SasState::KeysExchanged { emojis, .. } => {
                let Some(emojis) = emojis else {
                    tracing::info!(%user, "verification without emoji: cancelled");
                    let _ = sas.cancel().await;
                    return;
                };
                let shown = emojis
                    .emojis
                    .iter()
                    .map(|e| format!("{} {}", e.symbol, e.description))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::info!(%user, emojis = %shown, "verification: the bot's emojis; confirmed on its side");
                if let Some(room) = sas.room_id().and_then(|r| client.get_room(r)) {
                    let text = format!(
                        "🔐 Verification: my emojis are {shown}. If they are the ones your \
                         client shows, confirm there; if not, cancel."
                    );
                    if let Err(e) = room.send(RoomMessageEventContent::notice_plain(text)).await {
                        tracing::warn!(%user, "cannot show the emojis in the room: {e}");
                    }
                }
                if let Err(e) = sas.confirm().await {
                    tracing::warn!(%user, "cannot confirm the emojis: {e}");
                    return;
                }
            }
            SasState::Done { .. } => {
                let device = sas.other_device();
                tracing::info!(%user, device = %device.device_id(), "verified: each side now trusts the other");
                return;
            }
            SasState::Cancelled(info) => {
                tracing::info!(%user, reason = info.reason(), "verification cancelled");
                return;
            }
            SasState::Created { .. }
            | SasState::Started { .. }
            | SasState::Accepted { .. }
            | SasState::Confirmed => {}
        }
    }
}
