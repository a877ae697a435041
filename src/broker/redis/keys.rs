//! Key and channel names, all under the configured prefix so clusters can share a Redis.
//! Room and user names are restricted to `[A-Za-z0-9_.:@-]`, so they cannot forge a key.
//!
//! In cluster mode the room (or user) name is wrapped in a hash tag (`prefix:meta:{room}`), so
//! every key of a room and its channel hash to one slot: the publish script can touch them all
//! atomically on one shard, and the room's sharded channel lives on that same shard. Names can
//! hold no `{`, so the tag is always exactly the room or user name.

/// Builds names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    room_channel: String,
    user_channel: String,
    /// Hash tag delimiters: `{`/`}` in cluster mode, empty for a single Redis, whose names
    /// stay as they always were.
    open: &'static str,
    close: &'static str,
}

/// What a subscribed channel carries, recovered from its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    Room(&'a str),
    User(&'a str),
}

impl Keys {
    pub fn new(prefix: &str, cluster: bool) -> Self {
        let (open, close) = if cluster { ("{", "}") } else { ("", "") };
        Self {
            prefix: prefix.to_owned(),
            room_channel: format!("{prefix}:room:"),
            user_channel: format!("{prefix}:user:"),
            open,
            close,
        }
    }

    fn tagged(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{}{name}{}", self.prefix, self.open, self.close)
    }

    /// The hash of the publish keys used in `room` (in the room's slot in cluster mode).
    pub fn publish_keys(&self, room: &str) -> String {
        self.tagged("pk", room)
    }

    /// The lifecycle events' keys (`scripts::lifecycle`); single Redis only.
    pub fn webhooks(&self, name: &str) -> String {
        format!("{}:wh:{name}", self.prefix)
    }

    /// Every node's session count, with its expiry (one field per node), for rebalancing.
    pub fn loads(&self) -> String {
        format!("{}:loads", self.prefix)
    }

    /// This node's readiness probe key ([`super::probe`]).
    pub fn probe(&self, node: &str) -> String {
        format!("{}:probe:{node}", self.prefix)
    }

    /// Publications and presence events of one room.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}{}{room}{}", self.room_channel, self.open, self.close)
    }

    /// Direct messages to one user.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}{}{user}{}", self.user_channel, self.open, self.close)
    }

    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        let untag = |name: &'a str| {
            name.strip_prefix(self.open)
                .and_then(|name| name.strip_suffix(self.close))
        };
        if let Some(room) = channel.strip_prefix(&self.room_channel) {
            untag(room).map(Channel::Room)
        } else {
            channel
                .strip_prefix(&self.user_channel)
                .and_then(untag)
                .map(Channel::User)
        }
    }

    /// Hash with the room's `epoch` and `top` offset.
    pub fn meta(&self, room: &str) -> String {
        self.tagged("meta", room)
    }

    /// List of the room's latest message frames, oldest first; the last is offset `top`.
    /// (Named `log`, not the `hist` sorted set of earlier versions, so that during an upgrade
    /// neither version meets a key of the other's type.)
    pub fn history(&self, room: &str) -> String {
        self.tagged("log", room)
    }

    /// Stream of a durable room's message frames, entry id `offset-0` (`history.durable`).
    pub fn stream(&self, room: &str) -> String {
        self.tagged("stream", room)
    }

    /// Sorted set of a user's open sessions (lease expiry as score), for the per-user limit.
    pub fn sessions(&self, user: &str) -> String {
        self.tagged("sess", user)
    }

    /// Sorted set of presence leases `user/node`, scored by expiry (unix ms).
    pub fn leases(&self, room: &str) -> String {
        self.tagged("pres", room)
    }

    /// The same leases with score 0, so a user's leases can be found by lexical range.
    pub fn lease_index(&self, room: &str) -> String {
        self.tagged("presidx", room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip() {
        let keys = Keys::new("t1", false);
        assert_eq!(keys.room_channel("lobby"), "t1:room:lobby");
        assert_eq!(keys.meta("lobby"), "t1:meta:lobby");
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

    #[test]
    fn cluster_names_put_the_room_in_the_hash_tag() {
        let keys = Keys::new("t1", true);
        assert_eq!(keys.room_channel("a:b"), "t1:room:{a:b}");
        assert_eq!(keys.meta("a:b"), "t1:meta:{a:b}");
        assert_eq!(keys.history("a:b"), "t1:log:{a:b}");
        assert_eq!(keys.leases("a:b"), "t1:pres:{a:b}");
        assert_eq!(keys.lease_index("a:b"), "t1:presidx:{a:b}");
        assert_eq!(keys.sessions("bob"), "t1:sess:{bob}");
        assert_eq!(
            keys.parse_channel("t1:room:{a:b}"),
            Some(Channel::Room("a:b"))
        );
        assert_eq!(
            keys.parse_channel("t1:user:{bob}"),
            Some(Channel::User("bob"))
        );
        assert_eq!(keys.parse_channel("t1:room:lobby"), None);
    }
}
