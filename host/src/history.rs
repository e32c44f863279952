//! The guests that ran before the running one, compiled and kept by their
//! file's hash, for an admin's `rollback` (their files are kept on disk
//! too, `kept.rs`, so a restart has them again).

use std::collections::VecDeque;

use surfaces_embed::GuestComponent;

/// How many earlier guests are kept (each is a compiled component: a few
/// megabytes of code).
pub const KEPT: usize = 3;

/// Earlier guests, the latest last; never two of one file.
#[derive(Default)]
pub struct History {
    guests: VecDeque<GuestComponent>,
}

impl History {
    /// `guest` stopped serving: keep it, as the latest.
    pub fn left(&mut self, guest: GuestComponent) {
        self.guests.retain(|g| g.hash() != guest.hash());
        self.guests.push_back(guest);
        while self.guests.len() > KEPT {
            self.guests.pop_front();
        }
    }

    /// `guest` serves (again): it is not an earlier guest.
    pub fn serving(&mut self, guest: &GuestComponent) {
        self.guests.retain(|g| g.hash() != guest.hash());
    }

    /// The latest earlier guest, taken out.
    pub fn take_latest(&mut self) -> Option<GuestComponent> {
        self.guests.pop_back()
    }

    /// Their hashes, the latest last.
    pub fn hashes(&self) -> Vec<String> {
        self.guests.iter().map(|g| g.hash().to_string()).collect()
    }

    pub fn len(&self) -> usize {
        self.guests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.guests.is_empty()
    }
}
