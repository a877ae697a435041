//! The rooms one session is in. The connection holds its set, but only the node changes it
//! ([`super::Node::join`], [`super::Node::leave`], [`super::Node::close_session`]), so the
//! membership rules (no second join, the per-connection room limit, leave only what was
//! joined) live in one place, next to the hub and broker bookkeeping they must agree with.

use std::collections::HashSet;
use std::sync::Arc;

use super::NodeError;

/// Rooms joined or being joined by one session.
#[derive(Default)]
pub struct Memberships(HashSet<Arc<str>>);

impl Memberships {
    /// `Ok` when the session is in `room`; the request it guards is refused otherwise.
    pub fn check(&self, room: &str) -> Result<(), NodeError> {
        if self.0.contains(room) {
            Ok(())
        } else {
            Err(NodeError::NotMember(room.to_owned()))
        }
    }

    /// Takes `room`, within at most `max` rooms.
    pub(super) fn claim(&mut self, room: &str, max: usize) -> Result<(), NodeError> {
        if self.0.contains(room) {
            return Err(NodeError::AlreadyJoined);
        }
        if self.0.len() >= max {
            return Err(NodeError::TooManyRooms { max });
        }
        self.0.insert(Arc::from(room));
        Ok(())
    }

    /// Gives `room` back; false when the session was not in it.
    pub(super) fn release(&mut self, room: &str) -> bool {
        self.0.remove(room)
    }

    pub(super) fn take(&mut self) -> HashSet<Arc<str>> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_rules() {
        let mut rooms = Memberships::default();
        assert!(matches!(rooms.check("a"), Err(NodeError::NotMember(r)) if r == "a"));
        rooms.claim("a", 2).unwrap();
        assert!(rooms.check("a").is_ok());
        assert!(matches!(rooms.claim("a", 2), Err(NodeError::AlreadyJoined)));
        rooms.claim("b", 2).unwrap();
        assert!(matches!(
            rooms.claim("c", 2),
            Err(NodeError::TooManyRooms { max: 2 })
        ));
        assert!(rooms.release("a"));
        assert!(!rooms.release("a"));
        assert_eq!(rooms.take().len(), 1);
        assert!(rooms.check("b").is_err());
    }
}
