//! Publishing: one publication ([`PUBLISH`]) or a batch of them ([`PUBLISH_BATCH`]).

use super::{Call, Invocation, Scripts};
use crate::broker::{new_epoch, unix_ms};

/// Publish keys a room keeps in Redis (see [`PUBLISH`]); the memory engine keeps half as many.
pub const MAX_PUBLISH_KEYS: usize = 2048;

impl Scripts {
    /// Orders, stores and announces one publication of the frame `prefix` offset `suffix`.
    /// With `key`, a repeat of a key used in the room's current epoch publishes nothing.
    /// Replies with the offset, negated for a repeat (offsets are at least 1).
    /// A room with durable history ([`crate::broker::Retention::durable`]) also gets the
    /// frame in its stream.
    pub fn publish(&self, room: &str, prefix: &str, suffix: &str, key: Option<&str>) -> Call<i64> {
        let (keys, history) = (&self.keys, self.history);
        let durable = self.retention.durable(room);
        let mut call = self.bodies.publish.prepare();
        call.key(keys.meta(room))
            .key(keys.history(room))
            .key(keys.stream(room))
            .arg(prefix)
            .arg(suffix)
            .arg(new_epoch().as_ref())
            .arg(history.size)
            .arg(history.ttl.as_millis() as u64)
            .arg(keys.room_channel(room))
            .arg(history.max_room_bytes)
            .arg(self.retention.epoch_ttl(room).as_millis() as u64)
            .arg(durable.map_or(0, |rule| rule.max_count))
            .arg(durable.map_or(0, |rule| rule.max_age.as_millis() as u64))
            .arg(unix_ms());
        if let Some(key) = key {
            call.key(keys.publish_keys(room)).arg(key);
        }
        call.reply()
    }

    /// A [`PUBLISH_BATCH`] call, to which the caller adds each room and then its frames. Not
    /// for rooms with durable history, which the batch does not write.
    pub fn publish_batch(&self) -> BatchCall<'_> {
        let history = self.history;
        let mut call = self.bodies.publish_batch.prepare();
        call.arg(new_epoch().as_ref())
            .arg(history.size)
            .arg(history.ttl.as_millis() as u64)
            .arg(history.max_room_bytes)
            .arg(self.retention.epoch_ttl.as_millis() as u64);
        BatchCall {
            scripts: self,
            call,
        }
    }
}

/// A [`PUBLISH_BATCH`] call being built: rooms in order, each followed by its `count` frames.
pub struct BatchCall<'a> {
    scripts: &'a Scripts,
    call: Invocation,
}

impl BatchCall<'_> {
    /// Starts `room`'s group; exactly `count` [`Self::frame`]s must follow.
    pub fn room(&mut self, room: &str, count: usize) -> &mut Self {
        let keys = &self.scripts.keys;
        self.call
            .key(keys.meta(room))
            .key(keys.history(room))
            .arg(count)
            .arg(keys.room_channel(room));
        self
    }

    pub fn frame(&mut self, prefix: &str, suffix: &str) -> &mut Self {
        self.call.arg(prefix).arg(suffix);
        self
    }

    /// The call; replies with each room's first offset, in the order the rooms were added.
    pub fn done(self) -> Call<Vec<u64>> {
        self.call.reply()
    }
}

/// Orders, stores and announces one publication.
/// KEYS: meta hash, history log, durable stream, [the room's publish keys hash]. ARGV: frame
/// prefix, frame suffix, fresh epoch, history size, history ttl ms, channel, history bytes per
/// room, meta ttl ms, durable max count (0: not durable), durable max age ms, now (unix ms),
/// [publish key].
/// The meta hash lives for the epoch TTL (longer than the log), so an idle room keeps its
/// numbering. A durable room's frame is also added to its stream under the id `offset-0`,
/// with its time in field `t`; the stream keeps `max count` entries and none older than `max
/// age` ([`TRIM_AGE`]), and expires `max age` after the last publication.
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
pub(super) const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- Numbering starts over: frames left from the lost epoch must not pass for this one's.
  redis.call('DEL', KEYS[2], KEYS[3])
end
local key = ARGV[12]
if key then
  local prior = redis.call('HGET', KEYS[4], key)
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
redis.call('PEXPIRE', KEYS[1], ARGV[8])
local max_count = tonumber(ARGV[9])
if max_count > 0 then
  local add = {'XADD', KEYS[3], 'MAXLEN', max_count, offset .. '-0', 'f', frame, 't', ARGV[11]}
  -- A stream left with higher ids (its meta hash evicted by maxmemory) starts over.
  if type(redis.pcall(unpack(add))) == 'table' then
    redis.call('DEL', KEYS[3])
    redis.call(unpack(add))
  end
  trim_age(KEYS[3], tonumber(ARGV[11]) - tonumber(ARGV[10]))
  redis.call('PEXPIRE', KEYS[3], ARGV[10])
end
if key then
  if redis.call('HLEN', KEYS[4]) >= MAX_PUBLISH_KEYS then
    redis.call('DEL', KEYS[4])
  end
  redis.call('HSET', KEYS[4], key, epoch .. ' ' .. offset)
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
redis.call(PUBLISH, ARGV[6], message_payload(offset, epoch, frame))
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
/// history bytes per room, meta ttl ms, then per room: count, channel, and count × (frame
/// prefix, frame suffix).
/// Returns each room's first offset; its other publications have the ones after it.
pub(super) const PUBLISH_BATCH: &str = r#"
local size, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[4])
local ttl, meta_ttl = ARGV[3], ARGV[5]
local firsts = {}
local a = 6
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
    redis.call(PUBLISH, channel, message_payload(offset, epoch, frame))
  end
  if size > 0 then
    local len = redis.call('RPUSH', hist, unpack(frames))
    keep_within(meta, hist, len, count, bytes, size, max_bytes)
    redis.call('PEXPIRE', hist, ttl)
  end
  redis.call('PEXPIRE', meta, meta_ttl)
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
pub(super) const KEEP_WITHIN: &str = r#"
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

/// Defines `trim_age(stream, cutoff)`: drops the stream's entries whose time (field `t`, unix
/// ms) is below `cutoff`. Entries are in time order, so it looks at the oldest only: one
/// `XRANGE ... COUNT 1` when nothing is due, and at most 8 rounds of 64 more otherwise, so a
/// publication's cost stays bounded; what is left is dropped by later calls, and readers
/// ([`super::paging::PAGE`]) call it before reading.
pub(super) const TRIM_AGE: &str = r#"
local function trim_age(stream, cutoff)
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest == 0 or tonumber(oldest[1][2][4]) >= cutoff then
    return
  end
  for _ = 1, 8 do
    local entries = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    if #entries == 0 then
      return
    end
    local keep
    for _, entry in ipairs(entries) do
      if tonumber(entry[2][4]) >= cutoff then
        keep = entry[1]
        break
      end
    end
    if keep then
      redis.call('XTRIM', stream, 'MINID', keep)
      return
    end
    local last = tonumber(string.match(entries[#entries][1], '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', tostring(last + 1) .. '-0')
  end
end
"#;
