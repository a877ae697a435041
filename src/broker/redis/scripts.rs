//! The Lua scripts that make each multi-key step atomic inside Redis. Every state change that
//! other nodes must observe in order (a publication, a presence change) is announced with
//! PUBLISH from inside the same script, so the announcement order is the state-change order.
//!
//! Room channel payloads, parsed by `sequence.rs` (for both the single and the cluster reader):
//! - `m <offset> <epoch>\n<message frame>`: a publication;
//! - `p\n<presence frame>`: a presence event.
//!
//! User channel payloads: `d\n<direct frame>`, or `k\n` to close the user's sessions.
//!
//! Each script announces with `redis.call(PUBLISH, ...)`, where `PUBLISH` is a Lua local set to
//! `'PUBLISH'` for a single Redis and to `'SPUBLISH'` in cluster mode: a sharded publish stays on
//! the shard that owns the room's slot instead of being broadcast over the whole cluster bus.
//! The channel hashes to the slot of the script's keys (see `keys.rs`), as Redis requires.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

use crate::protocol::PresenceParts;

/// Publish keys a room keeps in Redis (see [`PUBLISH`]); the memory engine keeps half as many.
pub const MAX_PUBLISH_KEYS: usize = 2048;

/// The scripts for one mode, built once.
pub struct Scripts {
    pub publish: Lua,
    pub publish_batch: Lua,
    pub history: Lua,
    pub range: Lua,
    pub presence_add: Lua,
    pub presence_remove: Lua,
    pub presence_refresh: Lua,
    pub presence_reap: Lua,
    pub presence_list: Lua,
    pub claim_session: Lua,
}

static SINGLE: LazyLock<Scripts> = LazyLock::new(|| Scripts::build("PUBLISH"));
static SHARDED: LazyLock<Scripts> = LazyLock::new(|| Scripts::build("SPUBLISH"));

impl Scripts {
    /// The scripts for a single Redis, or (`sharded`) for a Redis Cluster.
    pub fn get(sharded: bool) -> &'static Scripts {
        if sharded { &SHARDED } else { &SINGLE }
    }

    fn build(publish: &str) -> Self {
        let script = |body: &str| {
            Lua::new(format!(
                "local PUBLISH = '{publish}'\nlocal MAX_PUBLISH_KEYS = {MAX_PUBLISH_KEYS}\n{body}"
            ))
        };
        Self {
            publish: script(&format!("{KEEP_WITHIN}{PUBLISH}")),
            publish_batch: script(&format!("{KEEP_WITHIN}{PUBLISH_BATCH}")),
            history: script(&format!("{OFFSET_OF}{HISTORY}")),
            range: script(&format!("{OFFSET_OF}{RANGE}")),
            presence_add: script(&format!("{ANNOUNCE}{PRESENCE_ADD}")),
            presence_remove: script(&format!("{ANNOUNCE}{PRESENCE_REMOVE}")),
            presence_refresh: script(&format!("{ANNOUNCE}{PRESENCE_REFRESH}")),
            presence_reap: script(&format!("{ANNOUNCE}{PRESENCE_REAP}")),
            presence_list: script(PRESENCE_LIST),
            claim_session: script(CLAIM_SESSION),
        }
    }
}

/// A Lua script run by its SHA1 (`EVALSHA`), and with its body (`EVAL`, which caches it) on a
/// node that does not know it yet. `redis::Script` answers `NOSCRIPT` with a `SCRIPT LOAD` that
/// a cluster connection sends to every master, so one dead shard would stop the others from
/// learning a script (a restarted or promoted node starts with an empty cache); `EVAL` goes
/// only to the node owning the keys.
pub struct Lua {
    code: String,
    hash: String,
}

/// One call of a [`Lua`] script: its keys and arguments.
pub struct Invocation<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Invocation<'_> {
    /// Adds `KEYS[n]`: routes the call in a cluster, so every key must share one slot.
    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds `ARGV[n]`.
    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Adds a presence frame's three parts, in the order `announce` takes them.
    pub fn presence_parts(&mut self, parts: &PresenceParts) -> &mut Self {
        self.arg(&parts.before)
            .arg(&parts.between)
            .arg(&parts.after)
    }

    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd("EVALSHA", &self.lua.hash).query_async(con).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd("EVAL", &self.lua.code).query_async(con).await
            }
            other => other,
        }
    }

    fn cmd(&self, eval: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(eval);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// Orders, stores and announces one publication.
/// KEYS: meta hash, history log, [the room's publish keys hash]. ARGV: frame prefix, frame
/// suffix, fresh epoch, history size, history ttl ms, channel, history bytes per room,
/// [publish key].
/// With a publish key (the client's, for retries): when the key was used in this room within
/// the history TTL and in the current epoch, nothing is published and the original offset is
/// returned negated (offsets are at least 1, so a negative answer is always a repeat). A key
/// maps to `epoch offset`, so one from before Redis lost the room counts for nothing. A room
/// keeps at most [`MAX_PUBLISH_KEYS`] keys (past it the hash starts over: a retry of a
/// forgotten one would publish again), so keyed publishes cannot grow Redis beyond the room.
/// The meta hash (`epoch`, `top`) is created with a fresh epoch when missing, so offsets that
/// restart at 1 after Redis lost its data always come with a new epoch.
///
/// The history is a list of frames, oldest first, each pushed in the same step that took its
/// offset, so the last one is offset `top`, the one before it `top - 1`, and so on. Appending
/// to a list costs Redis less than adding to a sorted set, which hashes and compares whole
/// frames, provided the list is not trimmed on every publication (below; measured side by side
/// in docs/BENCHMARKS.md, goal 5). Readers still check the offsets
/// written in the frames at both ends of what they read ([`OFFSET_OF`]), so a log with a hole
/// (a node with history off, or one from before the log, published in between) is never
/// replayed as if it had none.
///
/// The log is trimmed back to the history size only once it holds an eighth more: a trim
/// shifts what is left of the list's first node (up to 8 KiB) and is a command of its own, so
/// trimming every publication cost Redis 3 µs of its 10 (`benches/backplane.rs`). The log
/// therefore holds between `size` and `size + size / 8` frames. Resumes are served from the
/// last `size` only ([`HISTORY`]), as with the memory engine; a node filling a gap may use all.
/// The log's bytes are bounded too, without slack ([`KEEP_WITHIN`]).
const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- Numbering starts over: frames left from the lost epoch must not pass for this one's.
  redis.call('DEL', KEYS[2])
end
local key = ARGV[8]
if key then
  local prior = redis.call('HGET', KEYS[3], key)
  if prior then
    local was, at = string.match(prior, '^(%S+) (%d+)$')
    if was == epoch then
      return -tonumber(at)
    end
  end
end
-- The offset as text once: Lua formats a number with sprintf each time it meets one.
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local offset = tostring(top)
local frame = ARGV[1] .. offset .. ARGV[2]
local size = tonumber(ARGV[4])
if size > 0 then
  local len = redis.call('RPUSH', KEYS[2], frame)
  keep_within(KEYS[1], KEYS[2], len, 1, #frame, size, tonumber(ARGV[7]))
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if key then
  if redis.call('HLEN', KEYS[3]) >= MAX_PUBLISH_KEYS then
    redis.call('DEL', KEYS[3])
  end
  redis.call('HSET', KEYS[3], key, epoch .. ' ' .. offset)
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call(PUBLISH, ARGV[6], 'm ' .. offset .. ' ' .. epoch .. '\n' .. frame)
return top
"#;

/// Orders, stores and announces several publications, possibly to different rooms, in one
/// call: for each room the same state changes as that many [`PUBLISH`] runs in a row (offsets
/// taken in the order given, the same frames and payloads), with the per-room work done once
/// per call: one HGET and one HINCRBY (by the room's count) on the meta hash, one RPUSH of all
/// the room's frames, one trim (none while the log is within its slack, see [`PUBLISH`]) and one
/// PEXPIRE per key. Atomic, so no one can tell. The caller groups the publications by room, so
/// the script keeps no tables of its own.
/// KEYS: meta hash, history log, per room. ARGV: fresh epoch, history size, history ttl ms,
/// history bytes per room, then per room: count, channel, and count × (frame prefix, frame
/// suffix).
/// Returns each room's first offset; its other publications have the ones after it.
const PUBLISH_BATCH: &str = r#"
local size, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[4])
local ttl = ARGV[3]
local firsts = {}
local a = 5
for g = 1, #KEYS / 2 do
  local meta, hist = KEYS[2 * g - 1], KEYS[2 * g]
  local count, channel = tonumber(ARGV[a]), ARGV[a + 1]
  a = a + 2
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = ARGV[1]
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('DEL', hist)
  end
  local top = redis.call('HINCRBY', meta, 'top', count)
  local frames, bytes = {}, 0
  for n = top - count + 1, top do
    -- The offset as text once: Lua formats a number with sprintf each time it meets one.
    local offset = tostring(n)
    local frame = ARGV[a] .. offset .. ARGV[a + 1]
    a = a + 2
    frames[#frames + 1] = frame
    bytes = bytes + #frame
    redis.call(PUBLISH, channel, 'm ' .. offset .. ' ' .. epoch .. '\n' .. frame)
  end
  if size > 0 then
    local len = redis.call('RPUSH', hist, unpack(frames))
    keep_within(meta, hist, len, count, bytes, size, max_bytes)
    redis.call('PEXPIRE', hist, ttl)
  end
  redis.call('PEXPIRE', meta, ttl)
  firsts[g] = top - count + 1
end
return firsts
"#;

/// Defines `keep_within(meta, hist, len, pushed, added, size, max_bytes)`, run after `pushed`
/// frames of `added` bytes were appended to the log `hist`, now `len` long: drops the oldest
/// frames while the log holds more than `size + size / 8` frames (then down to `size`, see
/// [`PUBLISH`]) or more than `max_bytes` bytes (keeping the newest frame whatever its size).
/// The log's bytes are counted in the meta hash's `bytes` field, which costs one HINCRBY per
/// call; it is counted afresh whenever the push found the log empty (new, expired, or evicted
/// by Redis under `maxmemory`), so a count left from a lost log never sticks. One definition
/// for both publish scripts.
const KEEP_WITHIN: &str = r#"
local function keep_within(meta, hist, len, pushed, added, size, max_bytes)
  local bytes
  if len == pushed then
    bytes = added
    redis.call('HSET', meta, 'bytes', bytes)
  else
    bytes = redis.call('HINCRBY', meta, 'bytes', added)
  end
  local drop = 0
  if len > size + math.floor(size / 8) then
    drop = len - size
  end
  local freed = 0
  if drop > 0 then
    for _, frame in ipairs(redis.call('LPOP', hist, drop)) do
      freed = freed + #frame
    end
    len = len - drop
  end
  while bytes - freed > max_bytes and len > 1 do
    freed = freed + #redis.call('LPOP', hist)
    len = len - 1
  end
  if freed > 0 then
    redis.call('HINCRBY', meta, 'bytes', -freed)
  end
end
"#;

/// Defines `offset_of(frame)`, the offset a message frame carries: the first `,"offset":` in
/// it is the frame's own, since only `type` and `room` (a JSON string, where a quote is always
/// escaped) come before it.
const OFFSET_OF: &str = r#"
local function offset_of(frame)
  return tonumber(string.match(frame, ',"offset":(%d+)'))
end
"#;

/// A room's position, and for a resume the frames after `since` if all of them are held.
/// KEYS: meta hash, history log. ARGV: fresh epoch, since (-1: not a resume), client epoch,
/// meta ttl ms, history size. Returns `{epoch, top, recovered (0/1), {frames...}}`.
const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
local since = tonumber(ARGV[2])
if since < 0 or ARGV[3] ~= epoch or since > top then
  return {epoch, top, 0, {}}
end
if since == top then
  return {epoch, top, 1, {}}
end
local count = top - since
-- The log may hold more than the history size (see PUBLISH); a resume gets no more.
if count > tonumber(ARGV[5]) then
  return {epoch, top, 0, {}}
end
local frames = redis.call('LRANGE', KEYS[2], -count, -1)
-- Offsets only grow along the log, so the right count with the right offsets at both ends
-- means that every offset in between is there.
if #frames ~= count or offset_of(frames[1]) ~= since + 1 or offset_of(frames[count]) ~= top then
  return {epoch, top, 0, {}}
end
return {epoch, top, 1, frames}
"#;

/// The frames of offsets `from..=to` (`to` clamped to the top) that the history still holds,
/// for a reader filling a gap. KEYS: meta hash, history log. ARGV: from, to.
/// Returns `{epoch or nil, offset of the first frame, {frames...}, top}`: no frames when the
/// log holds none of those offsets or has a hole there; `top` tells "nothing published since"
/// (from > top) from "trimmed away".
const RANGE: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top')
local epoch, top = meta[1], tonumber(meta[2] or '0')
if not epoch then
  return {false, 0, {}, 0}
end
-- The log's last frame is the top's, so its first is offset `base`.
local base = top - redis.call('LLEN', KEYS[2]) + 1
local from, to = math.max(tonumber(ARGV[1]), base), math.min(tonumber(ARGV[2]), top)
if from > to then
  return {epoch, from, {}, top}
end
local frames = redis.call('LRANGE', KEYS[2], from - base, to - base)
if offset_of(frames[1]) ~= from or offset_of(frames[#frames]) ~= to then
  return {epoch, from, {}, top}
end
return {epoch, from, frames, top}
"#;

/// Defines `announce(meta, channel, before, between, after, user)`: numbers a presence event
/// with the room's next `pseq` (a field of its meta hash, which lives while the room is hosted)
/// and publishes it, built from the frame's parts (`protocol::presence_parts`), on the room's
/// channel, in the same step as the change it announces. One definition for every presence
/// script.
const ANNOUNCE: &str = r#"
local function announce(meta, channel, before, between, after, user)
  local seq = redis.call('HINCRBY', meta, 'pseq', 1)
  redis.call(PUBLISH, channel, 'p\n' .. before .. seq .. between .. cjson.encode(user) .. after)
end
"#;

/// Adds this node's presence lease for a user; announces `presence_join` when the user had no
/// lease on any node. KEYS: leases zset (score = expiry ms), index zset (score 0, for lookups
/// by user), meta hash. ARGV: user, node, expiry ms, key ttl ms, channel, then the join
/// frame's three parts.
const PRESENCE_ADD: &str = r#"
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
const PRESENCE_REMOVE: &str = r#"
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
const PRESENCE_REFRESH: &str = r#"
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
/// so a room's position outlives quiet spells while it has members. KEYS: leases, index, meta.
/// ARGV: now ms, channel, meta ttl ms, then the leave frame's three parts.
const PRESENCE_REAP: &str = r#"
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
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return #expired
"#;

/// The users with a live lease in a room and the room's presence `pseq`, read in one step so
/// the list is exactly as of that event. KEYS: leases, meta. ARGV: now ms. Returns
/// `{pseq, member...}` (members are `user/node`).
const PRESENCE_LIST: &str = r#"
local seq = tonumber(redis.call('HGET', KEYS[2], 'pseq') or '0')
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
table.insert(members, 1, seq)
return members
"#;

/// Counts a session against its user's cluster-wide limit. KEYS: the user's session zset
/// (member = session key, score = lease expiry ms). ARGV: session key, expiry ms, now ms,
/// limit, key ttl ms. Expired leases (their node died) stop counting. Returns 1 if claimed.
const CLAIM_SESSION: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;
