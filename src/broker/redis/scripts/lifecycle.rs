//! Lifecycle events for webhooks, decided in Redis so that exactly one node observes each.
//! Six keys, one set per prefix (a single Redis only): `leases` (zset, member
//! `kind/name/node`, score = expiry ms; `kind` is `u` for a user's sessions, `r` for a room's
//! members), `index` (the same members, score 0, to look up by `kind/name`), `pending` (zset of
//! `kind/name` whose last holder went, score = when the debounce ends), `data` (hash: a pending
//! `kind/name` → `id json`, an outbox id → its JSON, `#id` → tries so far), `outbox` (zset of
//! event ids, score = when a node may take it next) and `seq` (the counter that orders events).

use super::{Call, Invocation, Lua, Scripts};

/// One node's claim on `kind/name`, as the scripts spell it.
pub fn holder(kind: char, name: &str) -> String {
    format!("{kind}/{name}")
}

impl Scripts {
    fn lifecycle(&self, lua: &'static Lua) -> Invocation {
        let mut call = lua.prepare();
        for name in ["leases", "index", "pending", "data", "outbox", "seq"] {
            call.key(self.keys.webhooks(name));
        }
        call
    }

    /// `node` holds `kind/name` until `expiry`: its first holder cancels a debounced last or
    /// queues `user_online`/`room_occupied`. Replies `(queued, dropped)`.
    #[allow(clippy::too_many_arguments)]
    pub fn lifecycle_arrive(
        &self,
        holder: &str,
        node: &str,
        expiry: u64,
        now: u64,
        id: &str,
        events: &str,
        capacity: usize,
    ) -> Call<(u64, u64)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_arrive);
        call.arg(holder)
            .arg(node)
            .arg(expiry)
            .arg(now)
            .arg(id)
            .arg(events)
            .arg(capacity);
        call.reply()
    }

    /// `node` no longer holds `kind/name`: if it was the last, the offline event waits until
    /// `due`. Replies `(queued, dropped)`.
    pub fn lifecycle_depart(
        &self,
        holder: &str,
        node: &str,
        now: u64,
        id: &str,
        due: u64,
        capacity: usize,
    ) -> Call<(u64, u64)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_depart);
        call.arg(holder)
            .arg(node)
            .arg(now)
            .arg(id)
            .arg(due)
            .arg(capacity);
        call.reply()
    }

    /// Renews `node`'s `holders` until `expiry`, restoring (as a first holder) any reaped while
    /// the node could not renew. Replies `(queued, dropped)`.
    #[allow(clippy::too_many_arguments)]
    pub fn lifecycle_refresh(
        &self,
        node: &str,
        expiry: u64,
        now: u64,
        id_base: &str,
        events: &str,
        capacity: usize,
        holders: &[&String],
    ) -> Call<(u64, u64)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_refresh);
        call.arg(node)
            .arg(expiry)
            .arg(now)
            .arg(id_base)
            .arg(events)
            .arg(capacity)
            .arg(holders);
        call.reply()
    }

    /// Drops every node's holds that expired at `now` (their node died or lost Redis); a
    /// `kind/name` left with none waits until `due` as if its last holder had gone. Replies
    /// `(queued, dropped)`.
    pub fn lifecycle_reap(
        &self,
        now: u64,
        id_base: &str,
        due: u64,
        capacity: usize,
    ) -> Call<(u64, u64)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_reap);
        call.arg(now).arg(id_base).arg(due).arg(capacity);
        call.reply()
    }

    /// A direct message reached no session: queues `direct_undelivered` with `data` (raw
    /// JSON). Replies `(queued, dropped)`.
    #[allow(clippy::too_many_arguments)]
    pub fn lifecycle_undelivered(
        &self,
        id: &str,
        now: u64,
        user: &str,
        from: &str,
        data: &str,
        events: &str,
        capacity: usize,
    ) -> Call<(u64, u64)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_undelivered);
        call.arg(id)
            .arg(now)
            .arg(user)
            .arg(from)
            .arg(data)
            .arg(events)
            .arg(capacity);
        call.reply()
    }

    /// Moves debounced events due at `now` into the outbox, then takes up to `max` due events,
    /// hidden until `hold_until`. Replies `(moved, depth, [id, tries, json]...)`.
    pub fn lifecycle_claim(
        &self,
        now: u64,
        hold_until: u64,
        max: usize,
        events: &str,
    ) -> Call<(u64, u64, Vec<String>)> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_claim);
        call.arg(now).arg(hold_until).arg(max).arg(events);
        call.reply()
    }

    /// Settles claimed events: `(id, action, at)` with action `d` (delivered or dead: forget
    /// it) or `r` (retry, visible again at `at`).
    pub fn lifecycle_settle(&self, settled: &[(String, char, u64)]) -> Call<u64> {
        let mut call = self.lifecycle(&self.bodies.lifecycle_settle);
        for (id, action, at) in settled {
            call.arg(id).arg(action.to_string()).arg(at);
        }
        call.reply()
    }
}

/// What every lifecycle script shares: key names, the event JSON and the two transitions.
/// `first`/`last` return the events that went into the outbox, -1 when the queue was full.
/// `promote` moves a debounced event whose time came into the outbox.
pub(super) const COMMON: &str = r#"
local L, I, P, D, O, S = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ONLINE = {u = 'user_online', r = 'room_occupied'}
local OFFLINE = {u = 'user_offline', r = 'room_vacated'}
local FIELD = {u = 'user', r = 'room'}
local function enabled(events, kind)
  return string.find(events, ',' .. kind .. ',', 1, true) ~= nil
end
local function full(capacity)
  return redis.call('ZCARD', O) + redis.call('ZCARD', P) >= tonumber(capacity)
end
local function event(id, kind, field, name, now)
  local seq = redis.call('INCR', S)
  return cjson.encode({id = id, type = kind, [field] = name, ts = tonumber(now), seq = seq})
end
local function enqueue(id, json, now, capacity)
  if full(capacity) then return -1 end
  redis.call('HSET', D, id, json)
  redis.call('ZADD', O, now, id)
  return 1
end
local function held(holder)
  return #redis.call('ZRANGEBYLEX', I, '[' .. holder .. '/', '[' .. holder .. '/\255', 'LIMIT', 0, 1) > 0
end
local function split(holder)
  local slash = string.find(holder, '/', 1, true)
  return string.sub(holder, 1, slash - 1), string.sub(holder, slash + 1)
end
local function promote(holder, now, events)
  local value = redis.call('HGET', D, holder)
  redis.call('ZREM', P, holder)
  redis.call('HDEL', D, holder)
  if not value or not enabled(events, OFFLINE[string.sub(holder, 1, 1)]) then return 0 end
  local space = string.find(value, ' ', 1, true)
  local id = string.sub(value, 1, space - 1)
  redis.call('HSET', D, id, string.sub(value, space + 1))
  redis.call('ZADD', O, now, id)
  return 1
end
local function first(holder, id, now, events, capacity)
  local due = redis.call('ZSCORE', P, holder)
  local moved = 0
  if due and tonumber(due) > tonumber(now) then
    redis.call('ZREM', P, holder)
    redis.call('HDEL', D, holder)
    return 0
  elseif due then
    -- Back after the debounce, before any sender moved the offline event: it still counts.
    moved = promote(holder, now, events)
  end
  local kind, name = split(holder)
  if not enabled(events, ONLINE[kind]) then return moved end
  local queued = enqueue(id, event(id, ONLINE[kind], FIELD[kind], name, now), now, capacity)
  if queued < 0 then return queued end
  return moved + queued
end
local function last(holder, id, now, due, capacity)
  if full(capacity) then return -1 end
  local kind, name = split(holder)
  redis.call('ZADD', P, due, holder)
  redis.call('HSET', D, holder, id .. ' ' .. event(id, OFFLINE[kind], FIELD[kind], name, now))
  return 0
end
local function tally(counts, r)
  if r > 0 then counts[1] = counts[1] + r elseif r < 0 then counts[2] = counts[2] + 1 end
end
"#;

/// ARGV: holder, node, expiry ms, now ms, event id, enabled kinds, capacity.
pub(super) const ARRIVE: &str = r#"
local member = ARGV[1] .. '/' .. ARGV[2]
local had = held(ARGV[1])
if redis.call('ZADD', L, ARGV[3], member) == 0 then return {0, 0} end
redis.call('ZADD', I, 0, member)
local counts = {0, 0}
if not had then tally(counts, first(ARGV[1], ARGV[5], ARGV[4], ARGV[6], ARGV[7])) end
return counts
"#;

/// ARGV: holder, node, now ms, event id, due ms, capacity.
pub(super) const DEPART: &str = r#"
local member = ARGV[1] .. '/' .. ARGV[2]
if redis.call('ZREM', L, member) == 0 then return {0, 0} end
redis.call('ZREM', I, member)
local counts = {0, 0}
if not held(ARGV[1]) then tally(counts, last(ARGV[1], ARGV[4], ARGV[3], ARGV[5], ARGV[6])) end
return counts
"#;

/// ARGV: node, expiry ms, now ms, id base, enabled kinds, capacity, holders...
pub(super) const REFRESH: &str = r#"
local counts = {0, 0}
for i = 7, #ARGV do
  local member = ARGV[i] .. '/' .. ARGV[1]
  local had = held(ARGV[i])
  if redis.call('ZADD', L, ARGV[2], member) == 1 then
    redis.call('ZADD', I, 0, member)
    if not had then tally(counts, first(ARGV[i], ARGV[4] .. '-' .. i, ARGV[3], ARGV[5], ARGV[6])) end
  end
end
return counts
"#;

/// ARGV: now ms, id base, due ms, capacity. Only the call whose ZREM removed a member acts on
/// it, so reapers on several nodes never decide one transition twice.
pub(super) const REAP: &str = r#"
local counts = {0, 0}
local expired = redis.call('ZRANGEBYSCORE', L, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
for i, member in ipairs(expired) do
  if redis.call('ZREM', L, member) == 1 then
    redis.call('ZREM', I, member)
    local kind, rest = split(member)
    local name = split(rest)
    local holder = kind .. '/' .. name
    if not held(holder) then tally(counts, last(holder, ARGV[2] .. '-' .. i, ARGV[1], ARGV[3], ARGV[4])) end
  end
end
return counts
"#;

/// ARGV: event id, now ms, user, from, data (raw JSON), enabled kinds, capacity.
pub(super) const UNDELIVERED: &str = r#"
local counts = {0, 0}
if not enabled(ARGV[6], 'direct_undelivered') then return counts end
local json = event(ARGV[1], 'direct_undelivered', 'user', ARGV[3], ARGV[2])
json = string.sub(json, 1, -2) .. ',"from":' .. cjson.encode(ARGV[4]) .. ',"data":' .. ARGV[5] .. '}'
tally(counts, enqueue(ARGV[1], json, ARGV[2], ARGV[7]))
return counts
"#;

/// ARGV: now ms, hold until ms, max, enabled kinds. Each pending holder is moved by the one
/// call whose ZREM took it.
pub(super) const CLAIM: &str = r#"
local moved = 0
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', P, '-inf', ARGV[1], 'LIMIT', 0, 1000)) do
  moved = moved + promote(holder, ARGV[1], ARGV[4])
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', O, '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  redis.call('ZADD', O, ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = tostring(redis.call('HINCRBY', D, '#' .. id, 1))
  out[#out + 1] = redis.call('HGET', D, id) or '{}'
end
return {moved, redis.call('ZCARD', O) + redis.call('ZCARD', P), out}
"#;

/// ARGV: (id, action, at)... A retry uses XX so an event settled meanwhile (a repeat of a batch
/// whose hold ran out) is not brought back.
pub(super) const SETTLE: &str = r#"
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if ARGV[i + 1] == 'r' then
    redis.call('ZADD', O, 'XX', ARGV[i + 2], id)
  else
    redis.call('ZREM', O, id)
    redis.call('HDEL', D, id, '#' .. id)
  end
end
return 0
"#;
