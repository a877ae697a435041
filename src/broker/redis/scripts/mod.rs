//! The Lua scripts that make each multi-key step atomic inside Redis, and their typed calls:
//! each script's keys, arguments and reply are written once, in the method that calls it,
//! next to its Lua ([`publish`], [`history`], [`leases`], [`lifecycle`]). Every state change that other nodes
//! must observe in order (a publication, a presence change) is announced from inside the same
//! script, so the announcement order is the state-change order; what the announcement carries
//! is built by [`super::payload`]'s Lua functions.
//!
//! Each script announces with `redis.call(PUBLISH, ...)`, where `PUBLISH` is a Lua local set to
//! `'PUBLISH'` for a single Redis and to `'SPUBLISH'` in cluster mode: a sharded publish stays on
//! the shard that owns the room's slot instead of being broadcast over the whole cluster bus.
//! The channel hashes to the slot of the script's keys (see `keys.rs`), as Redis requires.

mod history;
mod leases;
mod lifecycle;
mod paging;
mod publish;

use std::marker::PhantomData;
use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

use super::keys::Keys;
use super::payload;
use crate::broker::Retention;
use crate::broker::memory::HistoryBudget;
use crate::protocol::PresenceParts;

pub use history::Range;
pub use lifecycle::holder;
pub use publish::MAX_PUBLISH_KEYS;

/// The script bodies for one mode, built once.
struct Bodies {
    publish: Lua,
    publish_batch: Lua,
    history: Lua,
    range: Lua,
    page: Lua,
    presence_add: Lua,
    presence_remove: Lua,
    presence_refresh: Lua,
    presence_reap: Lua,
    presence_list: Lua,
    claim_session: Lua,
    node_loads: Lua,
    lifecycle_arrive: Lua,
    lifecycle_depart: Lua,
    lifecycle_refresh: Lua,
    lifecycle_reap: Lua,
    lifecycle_undelivered: Lua,
    lifecycle_claim: Lua,
    lifecycle_settle: Lua,
}

static SINGLE: LazyLock<Bodies> = LazyLock::new(|| Bodies::build("PUBLISH"));
static SHARDED: LazyLock<Bodies> = LazyLock::new(|| Bodies::build("SPUBLISH"));

impl Bodies {
    fn build(publish: &str) -> Self {
        let script = |body: &str| {
            Lua::new(format!(
                "local PUBLISH = '{publish}'\nlocal MAX_PUBLISH_KEYS = {MAX_PUBLISH_KEYS}\n{}{body}",
                payload::LUA
            ))
        };
        let lifecycle = |body: &str| Lua::new(format!("{}{body}", lifecycle::COMMON));
        Self {
            publish: script(&format!(
                "{}{}{}",
                publish::KEEP_WITHIN,
                publish::TRIM_AGE,
                publish::PUBLISH
            )),
            publish_batch: script(&format!(
                "{}{}",
                publish::KEEP_WITHIN,
                publish::PUBLISH_BATCH
            )),
            history: script(&format!("{}{}", history::OFFSET_OF, history::HISTORY)),
            range: script(&format!("{}{}", history::OFFSET_OF, history::RANGE)),
            page: script(&format!(
                "{}{}{}",
                history::OFFSET_OF,
                publish::TRIM_AGE,
                paging::PAGE
            )),
            presence_add: script(&format!("{}{}", leases::ANNOUNCE, leases::PRESENCE_ADD)),
            presence_remove: script(&format!("{}{}", leases::ANNOUNCE, leases::PRESENCE_REMOVE)),
            presence_refresh: script(&format!("{}{}", leases::ANNOUNCE, leases::PRESENCE_REFRESH)),
            presence_reap: script(&format!("{}{}", leases::ANNOUNCE, leases::PRESENCE_REAP)),
            presence_list: script(leases::PRESENCE_LIST),
            claim_session: script(leases::CLAIM_SESSION),
            node_loads: script(leases::NODE_LOADS),
            lifecycle_arrive: lifecycle(lifecycle::ARRIVE),
            lifecycle_depart: lifecycle(lifecycle::DEPART),
            lifecycle_refresh: lifecycle(lifecycle::REFRESH),
            lifecycle_reap: lifecycle(lifecycle::REAP),
            lifecycle_undelivered: lifecycle(lifecycle::UNDELIVERED),
            lifecycle_claim: lifecycle(lifecycle::CLAIM),
            lifecycle_settle: lifecycle(lifecycle::SETTLE),
        }
    }
}

/// The engine's script calls: the bodies for its mode, and the key names and history limits
/// every call takes its keys and arguments from.
#[derive(Clone)]
pub struct Scripts {
    bodies: &'static Bodies,
    keys: Keys,
    history: HistoryBudget,
    retention: Retention,
}

impl Scripts {
    /// The calls for a single Redis, or (`sharded`) for a Redis Cluster.
    pub fn new(keys: Keys, history: HistoryBudget, retention: Retention, sharded: bool) -> Self {
        let bodies = if sharded { &SHARDED } else { &SINGLE };
        Self {
            bodies: LazyLock::force(bodies),
            keys,
            history,
            retention,
        }
    }
}

/// A Lua script run by its SHA1 (`EVALSHA`), and with its body (`EVAL`, which caches it) on a
/// node that does not know it yet. `redis::Script` answers `NOSCRIPT` with a `SCRIPT LOAD` that
/// a cluster connection sends to every master, so one dead shard would stop the others from
/// learning a script (a restarted or promoted node starts with an empty cache); `EVAL` goes
/// only to the node owning the keys.
struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    fn prepare(&'static self) -> Invocation {
        Invocation {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script being built: its keys and arguments.
struct Invocation {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    /// Adds `KEYS[n]`: routes the call in a cluster, so every key must share one slot.
    fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds `ARGV[n]`.
    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Adds a presence frame's three parts, in the order `announce` takes them.
    fn presence_parts(&mut self, parts: &PresenceParts) -> &mut Self {
        self.arg(&parts.before)
            .arg(&parts.between)
            .arg(&parts.after)
    }

    fn reply<T>(self) -> Call<T> {
        Call {
            invocation: self,
            reply: PhantomData,
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

/// A script call ready to run, whose reply is a `T`.
pub struct Call<T> {
    invocation: Invocation,
    reply: PhantomData<fn() -> T>,
}

impl<T: FromRedisValue> Call<T> {
    pub async fn run(&self, con: &mut impl ConnectionLike) -> RedisResult<T> {
        let call = &self.invocation;
        match call.cmd("EVALSHA", &call.lua.hash).query_async(con).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                call.cmd("EVAL", &call.lua.code).query_async(con).await
            }
            other => other,
        }
    }
}
