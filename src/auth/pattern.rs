//! What a token allows, as patterns from its `rooms` and `direct` claims: exact names, or `*`
//! wildcards matching any run of characters (`team:*`, `*:public`).

/// What rooms a session may join and publish to, and whom it may send direct messages.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// `None`: every room.
    join: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    /// `None`: every user.
    direct: Option<Vec<String>>,
}

impl Permissions {
    /// No restriction (a token with neither claim, or authentication off).
    pub fn any() -> Self {
        Self {
            join: None,
            publish: None,
            direct: None,
        }
    }

    /// Restricted to these patterns; `None` allows everything, an empty list nothing.
    pub fn new(
        join: Option<&[String]>,
        publish: Option<&[String]>,
        direct: Option<&[String]>,
    ) -> Self {
        Self {
            join: join.map(<[String]>::to_vec),
            publish: publish.map(<[String]>::to_vec),
            direct: direct.map(<[String]>::to_vec),
        }
    }

    pub fn may_join(&self, room: &str) -> bool {
        allowed(self.join.as_deref(), room)
    }

    pub fn may_publish(&self, room: &str) -> bool {
        allowed(self.publish.as_deref(), room)
    }

    pub fn may_send_to(&self, user: &str) -> bool {
        allowed(self.direct.as_deref(), user)
    }
}

fn allowed(patterns: Option<&[String]>, name: &str) -> bool {
    patterns.is_none_or(|patterns| patterns.iter().any(|p| matches(p, name)))
}

/// Glob match with `*` only. Iterative with one backtrack point, so it is linear-ish and a
/// hostile pattern in a token cannot blow up.
pub fn matches(pattern: &str, text: &str) -> bool {
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
        let any = Permissions::any();
        assert!(any.may_join("x") && any.may_publish("x") && any.may_send_to("x"));
        let some = Permissions::new(Some(&["team:*".into()]), Some(&[]), Some(&["bob".into()]));
        assert!(some.may_join("team:a"));
        assert!(!some.may_join("lobby"));
        assert!(!some.may_publish("team:a"));
        assert!(some.may_send_to("bob") && !some.may_send_to("bobby"));
    }
}
