//! Key and channel names, all under the configured prefix so clusters can share a Redis.
//! Room and user names are restricted to `[A-Za-z0-9_.:@-]`, so they cannot forge a key.

/// Builds names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    room_channel: String,
    user_channel: String,
}

/// What a subscribed channel carries, recovered from its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    Room(&'a str),
    User(&'a str),
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            room_channel: format!("{prefix}:room:"),
            user_channel: format!("{prefix}:user:"),
        }
    }

    /// Publications and presence events of one room.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}{room}", self.room_channel)
    }

    /// Direct messages to one user.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}{user}", self.user_channel)
    }

    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        if let Some(room) = channel.strip_prefix(&self.room_channel) {
            Some(Channel::Room(room))
        } else {
            channel.strip_prefix(&self.user_channel).map(Channel::User)
        }
    }

    /// Hash with the room's `epoch` and `top` offset.
    pub fn meta(&self, room: &str) -> String {
        format!("{}:meta:{room}", self.prefix)
    }

    /// Sorted set of the room's recent message frames, scored by offset.
    pub fn history(&self, room: &str) -> String {
        format!("{}:hist:{room}", self.prefix)
    }

    /// Sorted set of a user's open sessions (lease expiry as score), for the per-user limit.
    pub fn sessions(&self, user: &str) -> String {
        format!("{}:sess:{user}", self.prefix)
    }

    /// Sorted set of presence leases `user/node`, scored by expiry (unix ms).
    pub fn leases(&self, room: &str) -> String {
        format!("{}:pres:{room}", self.prefix)
    }

    /// The same leases with score 0, so a user's leases can be found by lexical range.
    pub fn lease_index(&self, room: &str) -> String {
        format!("{}:presidx:{room}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip() {
        let keys = Keys::new("t1");
        assert_eq!(keys.room_channel("lobby"), "t1:room:lobby");
        assert_eq!(
            keys.parse_channel("t1:room:lobby"),
            Some(Channel::Room("lobby"))
        );
        assert_eq!(
            keys.parse_channel("t1:user:bob"),
            Some(Channel::User("bob"))
        );
        assert_eq!(keys.parse_channel("t2:room:lobby"), None);
    }
}
