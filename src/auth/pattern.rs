//! Room permission patterns from a token's `rooms` claim: exact names, or `*` wildcards
//! matching any run of characters (`team:*`, `*:public`).

/// What rooms a session may join and publish to.
#[derive(Debug, Clone)]
pub struct RoomPatterns {
    /// `None`: every room.
    join: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

impl RoomPatterns {
    /// No restriction (no `rooms` claim, or authentication off).
    pub fn any() -> Self {
        Self {
            join: None,
            publish: None,
        }
    }

    /// Restricted to these patterns; an empty list allows nothing.
    pub fn new(join: &[String], publish: &[String]) -> Self {
        Self {
            join: Some(join.to_vec()),
            publish: Some(publish.to_vec()),
        }
    }

    pub fn may_join(&self, room: &str) -> bool {
        allowed(self.join.as_deref(), room)
    }

    pub fn may_publish(&self, room: &str) -> bool {
        allowed(self.publish.as_deref(), room)
    }
}

fn allowed(patterns: Option<&[String]>, room: &str) -> bool {
    patterns.is_none_or(|patterns| patterns.iter().any(|p| matches(p, room)))
}

/// Glob match with `*` only. Iterative with one backtrack point, so it is linear-ish and a
/// hostile pattern in a token cannot blow up.
fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("lobby", "lobby"));
        assert!(!matches("lobby", "lobby2"));
        assert!(matches("team:*", "team:red"));
        assert!(matches("team:*", "team:"));
        assert!(!matches("team:*", "teams"));
        assert!(matches("*:public", "a:b:public"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn absent_claim_allows_all_and_empty_list_allows_none() {
        let any = RoomPatterns::any();
        assert!(any.may_join("x") && any.may_publish("x"));
        let some = RoomPatterns::new(&["team:*".into()], &[]);
        assert!(some.may_join("team:a"));
        assert!(!some.may_join("lobby"));
        assert!(!some.may_publish("team:a"));
    }
}
