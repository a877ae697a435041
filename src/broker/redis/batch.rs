//! The publish batcher (single-Redis mode): publications from every session of this node go
//! to one task, which sends whatever is waiting, possibly for many rooms, as one
//! `PUBLISH_BATCH` script call (`scripts/publish.rs`), so Redis pays a script call's fixed cost once per
//! batch instead of once per publication.
//!
//! When to send: at once while fewer than `pipeline` calls are in flight; otherwise
//! publications wait for the next call to return and then go together (up to `max` of them,
//! or [`MAX_BYTES`]). There is no timed flush window: tokio's timers have millisecond
//! granularity, so a 100–200 µs window cannot be slept, and any sleep would delay a publication
//! on an idle node. The in-flight calls are the window instead: a batch gathers for exactly as
//! long as Redis takes to answer the previous ones, so batches stay single publications while
//! Redis keeps up and grow as it saturates.
//!
//! Each call is pipelined on the shared multiplexed connection. A call that fails or outlasts
//! `redis.command_timeout_ms` gives every publication in it `unavailable`, never an ack.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::connection::Conn;
use super::scripts::{Call, Scripts};
use super::{BrokerError, timed_out, within};

/// A batch stops growing once its frames pass this many bytes, so one call (and the reply
/// Redis buffers for it) stays small even with large messages.
pub(super) const MAX_BYTES: usize = 256 * 1024;

/// How publications are grouped into script calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishBatch {
    /// Most publications in one call; 1 sends one `PUBLISH` script per publication.
    pub max: usize,
    /// Calls in flight at once; publications arriving meanwhile gather into the next call.
    pub pipeline: usize,
}

/// A cheap handle to the batcher task: the sending half of its queue.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Pending>,
    timeout: Duration,
}

/// One publication waiting for its offset.
struct Pending {
    room: Arc<str>,
    prefix: String,
    suffix: String,
    reply: oneshot::Sender<Result<u64, BrokerError>>,
}

/// What the batcher task needs to build and run its calls.
pub(super) struct Context {
    pub conn: Conn,
    pub scripts: Scripts,
    pub timeout: Duration,
    pub batch: PublishBatch,
}

impl Batcher {
    /// Spawns the batcher task; it ends on `stop` or when every handle is dropped.
    pub(super) fn start(context: Context, stop: CancellationToken) -> Self {
        // Bounded: sessions wait here (each for its own publication) rather than queueing
        // without limit while Redis is slow.
        let (queue, waiting) = mpsc::channel(context.batch.max * (context.batch.pipeline + 1));
        let timeout = context.timeout;
        tokio::spawn(run(context, waiting, stop));
        Self { queue, timeout }
    }

    /// Orders one publication with whatever else is waiting and returns its offset.
    /// `unavailable` after `redis.command_timeout_ms` in all, queueing included; the
    /// publication may then still be ordered, as with any call that timed out.
    pub(super) async fn publish(
        &self,
        room: &str,
        prefix: String,
        suffix: String,
    ) -> Result<u64, BrokerError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            room: Arc::from(room),
            prefix,
            suffix,
            reply,
        };
        let ordered = async {
            self.queue.send(pending).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.timeout, ordered)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }
}

fn stopped() -> BrokerError {
    BrokerError::Unavailable("redis publisher stopped".into())
}

async fn run(context: Context, mut waiting: mpsc::Receiver<Pending>, stop: CancellationToken) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Completions first, so a freed slot takes everything that gathered meanwhile.
            biased;
            () = stop.cancelled() => return,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = waiting.recv(), if in_flight.len() < context.batch.pipeline => {
                let Some(first) = first else { return };
                let batch = gather(first, &mut waiting, context.batch.max);
                if !batch.is_empty() {
                    // Polled (and so written to the connection) before the next one is built.
                    in_flight.push(call(&context, batch));
                }
            }
        }
    }
    // Dropped here: the in-flight calls' callers get `unavailable` from their closed replies.
}

/// `first` and what is already waiting behind it, up to `max` publications or [`MAX_BYTES`].
/// Publications whose caller has gone (it timed out) are left out, so they are never ordered.
fn gather(first: Pending, waiting: &mut mpsc::Receiver<Pending>, max: usize) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(max.min(waiting.len() + 1));
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(pending) = next {
        if !pending.reply.is_closed() {
            bytes += pending.prefix.len() + pending.suffix.len();
            batch.push(pending);
        }
        if batch.len() >= max || bytes >= MAX_BYTES {
            break;
        }
        next = waiting.try_recv().ok();
    }
    batch
}

/// The script call ordering a batch.
enum Order {
    One(Call<i64>),
    Many(Call<Vec<u64>>),
}

/// One script call for `batch`, answering every publication in it.
fn call(context: &Context, batch: Vec<Pending>) -> impl Future<Output = ()> + 'static {
    let (groups, slots) = by_room(&batch);
    // A batch of one takes the `PUBLISH` script, which orders it for a little less Redis CPU
    // than `PUBLISH_BATCH`.
    let order = match &batch[..] {
        [p] => Order::One(context.scripts.publish(&p.room, &p.prefix, &p.suffix, None)),
        _ => {
            let mut call = context.scripts.publish_batch();
            for group in &groups {
                call.room(&batch[group[0]].room, group.len());
                for &i in group {
                    call.frame(&batch[i].prefix, &batch[i].suffix);
                }
            }
            Order::Many(call.done())
        }
    };
    metrics::histogram!("roomcast_redis_publish_batch_size").record(batch.len() as f64);
    let mut conn = context.conn.clone();
    let timeout = context.timeout;
    async move {
        // Each room's first offset; the room's publications have the ones after it, in order.
        let reply = async {
            match &order {
                Order::One(call) => call.run(&mut conn).await.map(|o| vec![o.unsigned_abs()]),
                Order::Many(call) => call.run(&mut conn).await,
            }
        };
        let firsts = match within(timeout, reply).await {
            Ok(firsts) if firsts.len() != groups.len() => Err(BrokerError::Unavailable(format!(
                "redis answered {} offsets for {} rooms",
                firsts.len(),
                groups.len()
            ))),
            other => other,
        };
        for (pending, (group, position)) in batch.into_iter().zip(slots) {
            let offset = firsts.as_ref().map(|firsts| firsts[group] + position);
            // A caller that gave up is no reason to stop answering the others.
            let _ = pending.reply.send(offset.map_err(Clone::clone));
        }
    }
}

/// The batch's publications grouped by room, rooms in order of first appearance, and for
/// each publication its room's group and its position there.
fn by_room(batch: &[Pending]) -> (Vec<Vec<usize>>, Vec<(usize, u64)>) {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut slots = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        let group = *index.entry(&p.room).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        slots.push((group, groups[group].len() as u64));
        groups[group].push(i);
    }
    (groups, slots)
}
