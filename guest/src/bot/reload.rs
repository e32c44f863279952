//! Swaps: the answer to an admin's `reload`, and swaps the host started on
//! its own (kept for `status`; admins are told when one is refused).

use surfaces_contract::HOST_RELOAD;

use super::Bot;
use crate::host::Host;
use crate::state::{
    LastReload, Records, Route, SWAPS_KEPT, User, last_reload_key, route_key, swaps_key, user_key,
};
use crate::types::ReloadResult;

impl Bot {
    pub(super) fn on_reload(&mut self, host: &mut dyn Host, r: ReloadResult) -> Result<(), String> {
        remember(host, &r.outcome)?;
        if r.request == HOST_RELOAD {
            return self.on_host_reload(host, r.outcome);
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

    fn on_host_reload(
        &mut self,
        host: &mut dyn Host,
        outcome: Result<String, String>,
    ) -> Result<(), String> {
        let Err(why) = outcome else {
            return Ok(());
        };
        let text = format!("⚠️ A new guest was refused; the running one keeps serving: {why}");
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
fn remember(host: &mut dyn Host, outcome: &Result<String, String>) -> Result<(), String> {
    let mut swaps = swaps(host)?;
    swaps.insert(
        0,
        LastReload {
            at_ms: host.now(),
            outcome: outcome.clone(),
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
