//! Paging a room's history ([`PAGE`]): from the durable stream for rooms that have one, from
//! the resume log otherwise.

use super::{Call, Scripts};
use crate::broker::{Order, PageRequest, unix_ms};

/// What [`PAGE`] answers: the room's epoch (none when Redis has no such room), its top, the
/// frames in the requested order, and whether more are held beyond them (0/1).
pub type PageReply = (Option<String>, u64, Vec<String>, u8);

impl Scripts {
    /// One page of `room`'s history.
    pub fn page(&self, room: &str, request: &PageRequest) -> Call<PageReply> {
        let keys = &self.keys;
        let durable = self.retention.durable(room);
        // Lua numbers are doubles: bounds past 2^53 are past any room's top anyway.
        let clamp = |n: u64| n.min(1 << 53);
        let mut call = self.bodies.page.prepare();
        call.key(keys.meta(room))
            .key(keys.history(room))
            .key(keys.stream(room))
            .arg(clamp(request.after))
            .arg(clamp(request.before))
            .arg(request.limit)
            .arg(u8::from(request.order == Order::NewestFirst))
            .arg(request.max_bytes)
            .arg(u8::from(durable.is_some()))
            .arg(durable.map_or(0, |rule| {
                unix_ms().saturating_sub(rule.max_age.as_millis() as u64)
            }));
        call.reply()
    }
}

/// Messages with `after < offset < before`, at most `limit` and (past the first) `max_bytes`
/// of them, the newest of the range first or the oldest first.
/// KEYS: meta hash, history log, durable stream. ARGV: after, before, limit, newest first (1/0),
/// max bytes, durable (1/0), durable cutoff (unix ms; older entries are dropped first).
/// Returns `{epoch or nil, top, {frames...}, more (0/1)}`.
///
/// A durable room reads its stream, whose entry ids are `offset-0`, with exclusive id ranges.
/// Other rooms read the log, whose last frame is offset `top` (see `PUBLISH`); as `RANGE`
/// does, the offsets written in the frames at both ends are checked, and a log with a hole
/// there (a node with history off published in between) yields no frames rather than
/// mislabelled ones.
pub(super) const PAGE: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top')
local epoch, top = meta[1], tonumber(meta[2] or '0')
if not epoch then
  return {false, 0, {}, 0}
end
local after, before = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, newest, max_bytes = tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local lo, hi = after + 1, math.min(before - 1, top)
local frames = {}
if lo > hi then
  return {epoch, top, {}, 0}
end
if ARGV[6] == '1' then
  trim_age(KEYS[3], tonumber(ARGV[7]))
  local first, last = tostring(lo) .. '-0', tostring(hi) .. '-0'
  local entries
  if newest then
    entries = redis.call('XREVRANGE', KEYS[3], last, first, 'COUNT', limit + 1)
  else
    entries = redis.call('XRANGE', KEYS[3], first, last, 'COUNT', limit + 1)
  end
  for i, entry in ipairs(entries) do
    frames[i] = entry[2][2]
  end
else
  local base = top - redis.call('LLEN', KEYS[2]) + 1
  lo = math.max(lo, base)
  if lo <= hi then
    local from, to = lo, hi
    if newest then
      from = math.max(lo, hi - limit)
    else
      to = math.min(hi, lo + limit)
    end
    local got = redis.call('LRANGE', KEYS[2], from - base, to - base)
    if #got > 0 and offset_of(got[1]) == from and offset_of(got[#got]) == to then
      if newest then
        for i = #got, 1, -1 do
          frames[#frames + 1] = got[i]
        end
      else
        frames = got
      end
    end
  end
end
local out, bytes = {}, 0
for _, frame in ipairs(frames) do
  if #out == limit or (#out > 0 and bytes + #frame > max_bytes) then
    return {epoch, top, out, 1}
  end
  bytes = bytes + #frame
  out[#out + 1] = frame
end
return {epoch, top, out, 0}
"#;
