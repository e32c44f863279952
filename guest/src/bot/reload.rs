//! Swaps: the answer to an admin's `reload`, and swaps the host started on
//! its own (kept for `status`; admins are told when one is refused).

use surfaces_contract::{HOST_RELOAD, HOST_ROLLBACK};

use super::Bot;
use crate::host::Host;
use crate::state::{
    LastReload, Records, Route, SWAPS_KEPT, User, last_reload_key, route_key, swaps_key, user_key,
};
use crate::types::ReloadResult;

impl Bot {
    pub(super) fn on_reload(&mut self, host: &mut dyn Host, r: ReloadResult) -> Result<(), String> {
        let rolled_back = r.request == HOST_ROLLBACK;
        remember(host, &r.outcome, rolled_back)?;
        if r.request == HOST_RELOAD || rolled_back {
            return self.on_host_reload(host, r.outcome, rolled_back);
        }
        let Some(Route::Reload {
            room_id,
            reply_to,
            thread_root,
        }) = host.load(&route_key(r.request))?
        else {
            return Ok(());
        };
        host.remove(&route_key(r.request));
        let text = match r.outcome {
            Ok(version) => format!("✅ Reloaded: now running guest {version}."),
            Err(why) => format!("⚠️ Reload refused, the previous guest keeps running: {why}"),
        };
        self.send_notice(
            host,
            &room_id,
            &text,
            Some(&reply_to),
            thread_root.as_deref(),
            Vec::new(),
        )
    }

    /// A swap the host made on its own: admins hear of a refusal or a
    /// rollback.
    fn on_host_reload(
        &mut self,
        host: &mut dyn Host,
        outcome: Result<String, String>,
        rolled_back: bool,
    ) -> Result<(), String> {
        let Err(why) = outcome else {
            return Ok(());
        };
        let text = if rolled_back {
            format!("⚠️ The new guest was rolled back, this one serves again: {why}")
        } else {
            format!("⚠️ A new guest was refused; the running one keeps serving: {why}")
        };
        for admin in self.cfg.admins.clone() {
            let user: Option<User> = host.load(&user_key(&admin))?;
            if let Some(room) = user.and_then(|u| u.dm_room) {
                self.send_notice(host, &room, &text, None, None, Vec::new())?;
            }
        }
        Ok(())
    }
}

/// Keep a swap's outcome for `status`, latest first.
fn remember(
    host: &mut dyn Host,
    outcome: &Result<String, String>,
    rolled_back: bool,
) -> Result<(), String> {
    let mut swaps = swaps(host)?;
    swaps.insert(
        0,
        LastReload {
            at_ms: host.now(),
            outcome: outcome.clone(),
            rolled_back,
        },
    );
    swaps.truncate(SWAPS_KEPT);
    host.save(&swaps_key(), &swaps)?;
    host.remove(&last_reload_key());
    Ok(())
}

/// The swaps remembered, latest first (an older store kept only the last
/// one the host started).
pub(super) fn swaps(host: &mut dyn Host) -> Result<Vec<LastReload>, String> {
    Ok(match host.load(&swaps_key())? {
        Some(swaps) => swaps,
        None => host.load(&last_reload_key())?.into_iter().collect(),
    })
}
