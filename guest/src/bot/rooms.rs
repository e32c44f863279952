//! Room membership: join on invite, leave a room where the bot is alone.

use super::Bot;
use crate::host::Host;
use crate::state::{Records, Route, route_key};
use crate::types::{Invite, LogLevel, MembersChanged};

impl Bot {
    pub(super) fn on_invite(&mut self, host: &mut dyn Host, i: Invite) -> Result<(), String> {
        if !self.cfg.auto_join {
            return Ok(());
        }
        let req = host.next_id()?;
        host.save(&route_key(req), &Route::Membership)?;
        host.log(
            LogLevel::Info,
            &format!("joining {} on invite from {}", i.room_id, i.inviter),
        );
        host.join(req, &i.room_id);
        Ok(())
    }

    pub(super) fn on_members(
        &mut self,
        host: &mut dyn Host,
        m: MembersChanged,
    ) -> Result<(), String> {
        if m.joined <= 1 {
            let req = host.next_id()?;
            host.save(&route_key(req), &Route::Membership)?;
            host.log(
                LogLevel::Info,
                &format!("leaving {}: nobody else is here", m.room_id),
            );
            host.leave(req, &m.room_id);
        }
        Ok(())
    }
}
