//! A bounded set of recent strings (event ids): the oldest go first.

use std::collections::{HashSet, VecDeque};

/// How many a [`Recent`] keeps by default.
pub const REMEMBERED: usize = 4096;

/// A bounded set of recent strings.
#[derive(Clone, Debug)]
pub struct Recent {
    cap: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent {
            cap,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub fn contains(&self, s: &str) -> bool {
        self.set.contains(s)
    }

    /// True when it was not there before.
    pub fn insert(&mut self, s: String) -> bool {
        if !self.set.insert(s.clone()) {
            return false;
        }
        self.order.push_back(s);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl Default for Recent {
    fn default() -> Recent {
        Recent::new(REMEMBERED)
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn the_oldest_are_forgotten_first() {
        let mut r = Recent::new(2);
        assert!(r.insert("a".into()));
        assert!(!r.insert("a".into()));
        r.insert("b".into());
        r.insert("c".into());
        assert!(!r.contains("a"));
        assert!(r.contains("b") && r.contains("c"));
    }
}
