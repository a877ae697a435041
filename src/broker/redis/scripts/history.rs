//! Reading a room's history: for a join or resume ([`HISTORY`]) and to fill a gap ([`RANGE`]).

use super::{Call, Scripts};
use crate::broker::new_epoch;
use crate::protocol::Resume;

/// What [`HISTORY`] answers: the room's epoch and top, whether the resume is recovered (0/1),
/// and the frames it missed.
pub type HistoryReply = (String, u64, u8, Vec<String>);

/// What [`RANGE`] answers: the room's epoch (none when Redis has no such room), the offset of
/// the first frame, the frames, one per offset from there on, and the room's top.
pub type Range = (Option<String>, u64, Vec<String>, u64);

impl Scripts {
    /// The room's epoch and top (a fresh epoch is made if Redis has none), and for `resume`
    /// the frames after it if all of them are held.
    pub fn history(&self, room: &str, resume: Option<&Resume>) -> Call<HistoryReply> {
        let (since, epoch) = match resume {
            // Past i64::MAX is past any room's top: clamping keeps it "not recoverable".
            Some(r) => (r.since.min(i64::MAX as u64) as i64, r.epoch.as_str()),
            None => (-1, ""),
        };
        let mut call = self.bodies.history.prepare();
        call.key(self.keys.meta(room))
            .key(self.keys.history(room))
            .arg(new_epoch().as_ref())
            .arg(since)
            .arg(epoch)
            .arg(self.retention.epoch_ttl(room).as_millis() as u64)
            .arg(self.history.size)
            .arg(self.history.ttl.as_millis() as u64);
        call.reply()
    }

    /// Offsets `from..=to` of `room` (`to` clamped to the room's top) that the history holds.
    pub fn range(&self, room: &str, from: u64, to: u64) -> Call<Range> {
        let mut call = self.bodies.range.prepare();
        call.key(self.keys.meta(room))
            .key(self.keys.history(room))
            .arg(from)
            .arg(to);
        call.reply()
    }
}

/// Defines `offset_of(frame)`, the offset a message frame carries: the first `,"offset":` in
/// it is the frame's own, since only `type` and `room` (a JSON string, where a quote is always
/// escaped) come before it.
pub(super) const OFFSET_OF: &str = r#"
local function offset_of(frame)
  return tonumber(string.match(frame, ',"offset":(%d+)'))
end
"#;

/// A room's position, and for a resume the frames after `since` if all of them are held.
/// KEYS: meta hash, history log. ARGV: fresh epoch, since (-1: not a resume), client epoch,
/// meta ttl ms, history size, history ttl ms. Returns `{epoch, top, recovered (0/1),
/// {frames...}}`. The meta hash of a room that has messages lives the (long) meta ttl; that of
/// a room never published to only the history ttl, as before epochs outlived the history:
/// there are no offsets to keep stable, and joins of made-up room names must not pin a hash
/// each for a day.
pub(super) const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('DEL', KEYS[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
redis.call('PEXPIRE', KEYS[1], top > 0 and ARGV[4] or ARGV[6])
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
pub(super) const RANGE: &str = r#"
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
