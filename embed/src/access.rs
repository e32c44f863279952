//! Who may talk to the bot and invite it: user-id patterns from the config.
//!
//! A pattern is a user id where `*` stands for any run of characters and
//! `?` for one: `@alice:example.org`, `*:example.org` (everyone on a
//! server), `@*-ops:example.org`. Matching is exact otherwise (Matrix user
//! ids are case-sensitive in their server part, lowercase in their local
//! part by the spec's grammar).

/// Why a pattern is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("access pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    allow: Vec<String>,
}

impl Access {
    /// `allow` empty means: everyone on `own_server` (the bot's own
    /// homeserver), nobody else. Admins are always allowed.
    pub fn new(allow: &[String], admins: &[String], own_server: &str) -> Access {
        let mut patterns: Vec<String> = if allow.is_empty() {
            vec![format!("@*:{own_server}")]
        } else {
            allow.to_vec()
        };
        patterns.extend(admins.iter().cloned());
        Access { allow: patterns }
    }

    /// Check a pattern as the config file gives it.
    pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
        let fail = |reason| {
            Err(PatternError {
                pattern: pattern.to_string(),
                reason,
            })
        };
        if !pattern.starts_with('@') && !pattern.starts_with('*') {
            return fail("must be a user id, starting with @ (or *)");
        }
        if !pattern.contains(':') {
            return fail("needs a server part, as in @name:server or *:server");
        }
        if pattern.chars().any(char::is_whitespace) {
            return fail("contains whitespace");
        }
        Ok(())
    }

    pub fn allows(&self, user_id: &str) -> bool {
        self.allow
            .iter()
            .any(|p| glob(p.as_bytes(), user_id.as_bytes()))
    }
}

/// `*` any run, `?` one byte; iterative with one backtrack point, so a
/// hostile pattern costs O(len(p) * len(s)) at worst.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn access(allow: &[&str]) -> Access {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Access::new(&allow, &["@root:admin.org".into()], "home.org")
    }

    #[test]
    fn default_is_the_own_server() {
        let a = access(&[]);
        assert!(a.allows("@alice:home.org"));
        assert!(!a.allows("@alice:home.org.evil"));
        assert!(!a.allows("@mallory:evil.org"));
        assert!(a.allows("@root:admin.org"), "admins are always allowed");
    }

    #[test]
    fn patterns() {
        let a = access(&["@alice:example.org", "*:friends.net", "@*-ops:corp.io"]);
        assert!(a.allows("@alice:example.org"));
        assert!(!a.allows("@alice:example.org2"));
        assert!(!a.allows("@alicex:example.org"));
        assert!(a.allows("@bob:friends.net"));
        assert!(!a.allows("@bob:friends.net.evil.org"));
        assert!(a.allows("@db-ops:corp.io"));
        assert!(!a.allows("@db-dev:corp.io"));
        assert!(!a.allows("@bob:home.org"), "a list replaces the default");
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(Access::check_pattern("alice").is_err());
        assert!(Access::check_pattern("@alice").is_err());
        assert!(Access::check_pattern("@a b:x").is_err());
        assert!(Access::check_pattern("*:x.org").is_ok());
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "@[a-z.?]{1,8}:[a-z.]{1,8}", b in "@[a-z.]{1,8}:[a-z.]{1,8}") {
            // `?` in a would be a wildcard: compare against a literal only.
            let literal = !a.contains('?');
            prop_assert!(glob(a.as_bytes(), a.as_bytes()) || !literal);
            if literal {
                prop_assert_eq!(glob(a.as_bytes(), b.as_bytes()), a == b);
            }
        }

        #[test]
        fn a_star_matches_every_localpart(local in "[a-z0-9._=-]{1,12}", server in "[a-z]{1,8}\\.org") {
            let pattern = format!("@*:{server}");
            let user = format!("@{local}:{server}");
            let other = format!("@{local}:{server}.evil");
            prop_assert!(glob(pattern.as_bytes(), user.as_bytes()));
            prop_assert!(!glob(pattern.as_bytes(), other.as_bytes()));
        }
    }
}
