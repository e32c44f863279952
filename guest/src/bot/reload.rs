//! Swaps: the answer to an admin's `reload`, and swaps the host started on
//! its own (kept for `status`; admins are told when one is refused).

use surfaces_contract::HOST_RELOAD;

use super::Bot;
use crate::host::Host;
use crate::state::{
    LastReload, Records, Route, SWAPS_KEPT, User, last_reload_key, route_key, swaps_key, user_key,
};
use crate::types::{ReloadOutcome, ReloadResult};

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
            back,
        }) = host.load(&route_key(r.request))?
        else {
            // Not ours (a rollback a newer guest asked for, with its route
            // in a format this one does not read): tell the admins.
            return self.on_host_reload(host, r.outcome);
        };
        host.remove(&route_key(r.request));
        let text = match r.outcome {
            ReloadOutcome::Swapped(version) => format!("✅ Reloaded: now running guest {version}."),
            ReloadOutcome::Refused(why) if back => {
                format!("⚠️ Rollback refused, this guest keeps running: {why}")
            }
            ReloadOutcome::Refused(why) => {
                format!("⚠️ Reload refused, the previous guest keeps running: {why}")
            }
            ReloadOutcome::RolledBack(what) => format!("↩️ Rolled back: {what}."),
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

    /// A swap or rollback the host made on its own: admins hear of a
    /// refusal or a rollback.
    fn on_host_reload(
        &mut self,
        host: &mut dyn Host,
        outcome: ReloadOutcome,
    ) -> Result<(), String> {
        let text = match outcome {
            ReloadOutcome::Swapped(_) => return Ok(()),
            ReloadOutcome::Refused(why) => {
                format!("⚠️ A new guest was refused; the running one keeps serving: {why}")
            }
            ReloadOutcome::RolledBack(what) => {
                format!("⚠️ The new guest was rolled back, this one serves again: {what}")
            }
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
fn remember(host: &mut dyn Host, outcome: &ReloadOutcome) -> Result<(), String> {
    let (outcome, rolled_back) = match outcome {
        ReloadOutcome::Swapped(version) => (Ok(version.clone()), false),
        ReloadOutcome::Refused(why) => (Err(why.clone()), false),
        ReloadOutcome::RolledBack(what) => (Err(what.clone()), true),
    };
    let mut swaps = swaps(host)?;
    swaps.insert(
        0,
        LastReload {
            at_ms: host.now(),
            outcome,
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
