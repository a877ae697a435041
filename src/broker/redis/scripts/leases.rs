//! Leases: presence per (room, user, node), and sessions per user for the cluster-wide limit.
//! Times are Unix milliseconds; a key lives twice its lease, so a node that stops renewing
//! leaves nothing behind for long.

use super::{Call, Invocation, Lua, Scripts};
use crate::protocol::presence_parts;

impl Scripts {
    /// A call of the presence script `lua` on `room`. KEYS: leases zset, index zset, meta hash.
    fn room_leases(&self, lua: &'static Lua, room: &str) -> Invocation {
        let mut call = lua.prepare();
        call.key(self.keys.leases(room))
            .key(self.keys.lease_index(room))
            .key(self.keys.meta(room));
        call
    }

    /// Adds `node`'s lease for `user` in `room` until `now + lease`; announces `presence_join`
    /// when the user had none on any node. Replies with the user's other leases found (0/1).
    pub fn presence_add(
        &self,
        room: &str,
        user: &str,
        node: &str,
        now: u64,
        lease: u64,
    ) -> Call<u64> {
        let keys = &self.keys;
        let mut call = self.room_leases(&self.bodies.presence_add, room);
        call.arg(user)
            .arg(node)
            .arg(now + lease)
            .arg(lease * 2)
            .arg(keys.room_channel(room))
            .presence_parts(&presence_parts(room, true));
        call.reply()
    }

    /// Removes `node`'s lease for `user`; announces `presence_leave` if it was the user's last.
    pub fn presence_remove(&self, room: &str, user: &str, node: &str) -> Call<u64> {
        let keys = &self.keys;
        let mut call = self.room_leases(&self.bodies.presence_remove, room);
        call.arg(user)
            .arg(node)
            .arg(keys.room_channel(room))
            .presence_parts(&presence_parts(room, false));
        call.reply()
    }

    /// Renews the `user/node` leases `members` of `room` until `now + lease`, restoring (and
    /// announcing) any that were reaped. Replies with the number renewed.
    pub fn presence_refresh(
        &self,
        room: &str,
        members: &[&String],
        now: u64,
        lease: u64,
    ) -> Call<u64> {
        let keys = &self.keys;
        let mut call = self.room_leases(&self.bodies.presence_refresh, room);
        call.arg(now + lease)
            .arg(lease * 2)
            .arg(keys.room_channel(room))
            .presence_parts(&presence_parts(room, true))
            .arg(members);
        call.reply()
    }

    /// Reaps the leases of `room` expired at `now`, announcing `presence_leave` for users left
    /// with none, and keeps the room's position alive. Replies with the number reaped.
    pub fn presence_reap(&self, room: &str, now: u64) -> Call<u64> {
        let keys = &self.keys;
        let mut call = self.room_leases(&self.bodies.presence_reap, room);
        call.arg(now)
            .arg(keys.room_channel(room))
            .arg(self.retention.epoch_ttl(room).as_millis() as u64)
            .presence_parts(&presence_parts(room, false))
            .arg(self.history.ttl.as_millis() as u64);
        call.reply()
    }

    /// The room's presence `pseq` and its live `user/node` leases at `now`, read in one step.
    pub fn presence_list(&self, room: &str, now: u64) -> Call<(u64, Vec<String>)> {
        let mut call = self.bodies.presence_list.prepare();
        call.key(self.keys.leases(room))
            .key(self.keys.meta(room))
            .arg(now);
        call.reply()
    }

    /// Records `node`'s session count until `now + lease`; replies with every live node's.
    pub fn node_loads(&self, node: &str, sessions: u64, now: u64, lease: u64) -> Call<Vec<u64>> {
        let mut call = self.bodies.node_loads.prepare();
        call.key(self.keys.loads())
            .arg(node)
            .arg(sessions)
            .arg(now)
            .arg(now + lease)
            .arg(lease * 2);
        call.reply()
    }

    /// Counts session `key` against `user`'s limit of `limit` until `now + lease`. Replies
    /// whether it was claimed.
    pub fn claim_session(
        &self,
        user: &str,
        key: &str,
        now: u64,
        lease: u64,
        limit: usize,
    ) -> Call<bool> {
        let mut call = self.bodies.claim_session.prepare();
        call.key(self.keys.sessions(user))
            .arg(key)
            .arg(now + lease)
            .arg(now)
            .arg(limit)
            .arg(lease * 2);
        call.reply()
    }
}

/// Defines `announce(meta, channel, before, between, after, user)`: numbers a presence event
/// with the room's next `pseq` (a field of its meta hash, which lives while the room is hosted)
/// and publishes it, built from the frame's parts (`protocol::presence_parts`), on the room's
/// channel, in the same step as the change it announces. One definition for every presence
/// script.
pub(super) const ANNOUNCE: &str = r#"
local function announce(meta, channel, before, between, after, user)
  local seq = redis.call('HINCRBY', meta, 'pseq', 1)
  redis.call(PUBLISH, channel, presence_payload(before .. seq .. between .. cjson.encode(user) .. after))
end
"#;

/// Adds this node's presence lease for a user; announces `presence_join` when the user had no
/// lease on any node. KEYS: leases zset (score = expiry ms), index zset (score 0, for lookups
/// by user), meta hash. ARGV: user, node, expiry ms, key ttl ms, channel, then the join
/// frame's three parts.
pub(super) const PRESENCE_ADD: &str = r#"
local member = ARGV[1] .. '/' .. ARGV[2]
local others = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[1] .. '/', '[' .. ARGV[1] .. '/\255', 'LIMIT', 0, 1)
redis.call('ZADD', KEYS[1], ARGV[3], member)
redis.call('ZADD', KEYS[2], 0, member)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if #others == 0 then
  announce(KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[1])
end
return #others
"#;

/// Removes this node's lease for a user; announces `presence_leave` when it was the user's
/// last. KEYS: leases, index, meta. ARGV: user, node, channel, then the leave frame's three
/// parts.
pub(super) const PRESENCE_REMOVE: &str = r#"
local member = ARGV[1] .. '/' .. ARGV[2]
local removed = redis.call('ZREM', KEYS[1], member)
redis.call('ZREM', KEYS[2], member)
if removed == 1 then
  local others = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[1] .. '/', '[' .. ARGV[1] .. '/\255', 'LIMIT', 0, 1)
  if #others == 0 then
    announce(KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[1])
  end
end
return removed
"#;

/// Renews this node's leases in one room. A lease that is not there any more was reaped while
/// this node could not renew it (Redis paused or full past the lease): its user is still
/// connected, so it is restored, and announced with `presence_join` when the user has no other
/// lease, since the reaper announced `presence_leave`. Members' views thus converge to the
/// truth within one renewal period. KEYS: leases, index, meta. ARGV: expiry ms, key ttl ms,
/// channel, the join frame's three parts, members (`user/node`)...
pub(super) const PRESENCE_REFRESH: &str = r#"
for i = 7, #ARGV do
  local member = ARGV[i]
  if redis.call('ZADD', KEYS[1], ARGV[1], member) == 1 then
    local user = string.sub(member, 1, string.find(member, '/', 1, true) - 1)
    local others = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. user .. '/', '[' .. user .. '/\255', 'LIMIT', 0, 2)
    if #others == 0 or (#others == 1 and others[1] == member) then
      announce(KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], user)
    end
  end
  redis.call('ZADD', KEYS[2], 0, member)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return #ARGV - 6
"#;

/// Drops leases that expired (their node stopped refreshing: it crashed or lost Redis) and
/// announces `presence_leave` for users left with none. Safe to run on several nodes at once:
/// only the one whose ZREM removed a lease announces. Also renews the hosted room's meta hash,
/// so a room's position outlives quiet spells while it has members: for the meta ttl once the
/// room has messages, for the history ttl before (see `HISTORY`). KEYS: leases, index, meta.
/// ARGV: now ms, channel, meta ttl ms, the leave frame's three parts, history ttl ms.
pub(super) const PRESENCE_REAP: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
for _, member in ipairs(expired) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    redis.call('ZREM', KEYS[2], member)
    local user = string.sub(member, 1, string.find(member, '/', 1, true) - 1)
    local others = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. user .. '/', '[' .. user .. '/\255', 'LIMIT', 0, 1)
    if #others == 0 then
      announce(KEYS[3], ARGV[2], ARGV[4], ARGV[5], ARGV[6], user)
    end
  end
end
local top = tonumber(redis.call('HGET', KEYS[3], 'top') or '0')
redis.call('PEXPIRE', KEYS[3], top > 0 and ARGV[3] or ARGV[7])
return #expired
"#;

/// The users with a live lease in a room and the room's presence `pseq`, read in one step so
/// the list is exactly as of that event. KEYS: leases, meta. ARGV: now ms. Returns
/// `{pseq, {member...}}` (members are `user/node`).
pub(super) const PRESENCE_LIST: &str = r#"
local seq = tonumber(redis.call('HGET', KEYS[2], 'pseq') or '0')
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
return {seq, members}
"#;

/// Counts a session against its user's cluster-wide limit. KEYS: the user's session zset
/// (member = session key, score = lease expiry ms). ARGV: session key, expiry ms, now ms,
/// limit, key ttl ms. Expired leases (their node died) stop counting. Returns 1 if claimed.
pub(super) const CLAIM_SESSION: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;

/// Records one node's session count and reads every live node's, for rebalancing. KEYS: the
/// loads hash (field = node, value = `count expiry_ms`). ARGV: node, count, now ms, expiry ms,
/// key ttl ms. Fields past their expiry (a node that stopped or crashed) are dropped, so the
/// hash holds one field per live node. Returns the live counts.
pub(super) const NODE_LOADS: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local counts = {}
for i = 1, #all, 2 do
  local count, expiry = string.match(all[i + 1], '^(%d+) (%d+)$')
  if count and tonumber(expiry) >= now then
    counts[#counts + 1] = tonumber(count)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return counts
"#;
