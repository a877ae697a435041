//! The naming rule shared by rooms and users: 1–128 characters of `[A-Za-z0-9_.:@-]`.

/// The rule, as every refusal states it (`"{field} must be {NAME_RULE}"`).
pub const NAME_RULE: &str = "1-128 characters of [A-Za-z0-9_.:@-]";

/// The refusal of a `field` (room, user, key, …) that breaks the rule.
pub fn name_rule(field: &str) -> String {
    format!("{field} must be {NAME_RULE}")
}

/// Longest room or user name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// True when `name` may be used as a room or user name. The rule keeps names safe to embed in
/// Redis channel names, URLs and logs without escaping.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(valid_name("lobby"));
        assert!(valid_name("team:42@eu-west_1.general"));
        assert!(valid_name(&"a".repeat(MAX_NAME_LEN)));
    }

    #[test]
    fn rejects_everything_else() {
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        for bad in [
            "with space",
            "slash/room",
            "star*",
            "ünï",
            "new\nline",
            "{tag}",
        ] {
            assert!(!valid_name(bad), "{bad:?} should be rejected");
        }
    }
}
