//! The subscription connection of a single Redis and its single ordered reader.
//!
//! One task owns the connection's message stream and hands every message, in arrival order
//! (for one room, offset order), to the sequencing shared with cluster mode ([`sequence`]),
//! which fills offset gaps from the history so members see contiguous offsets. When the
//! connection drops it reconnects with backoff and jitter, resubscribes every wanted channel
//! and backfills every hosted room.
//!
//! [`sequence`]: super::sequence

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;

use super::{Shared, sequence, subscriptions};

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Bounds how long delivery stays down after Redis comes back: one attempt per second at worst.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(super) async fn run(shared: Arc<Shared>, client: redis::Client) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connect = tokio::time::timeout(shared.opts.command_timeout, client.get_async_pubsub());
        let pubsub = tokio::select! {
            () = shared.stop.cancelled() => return,
            result = connect => result,
        };
        let (sink, mut stream) = match pubsub {
            Ok(Ok(pubsub)) => pubsub.split(),
            Ok(Err(err)) => {
                tracing::warn!(%err, "redis subscription connection failed");
                if !pause(&shared, &mut backoff).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("redis subscription connection timed out");
                if !pause(&shared, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = resubscribe(&shared, sink).await {
            tracing::warn!(%err, "redis resubscribe failed");
            if !pause(&shared, &mut backoff).await {
                return;
            }
            continue;
        }
        backoff = BACKOFF_MIN;
        shared.connected.store(true, Ordering::Release);
        tracing::info!("redis subscription up");
        let hosted: Vec<Arc<str>> = shared.subs.lock().rooms.keys().cloned().collect();
        sequence::backfill(&shared, &hosted).await;
        loop {
            let msg = tokio::select! {
                () = shared.stop.cancelled() => return,
                msg = stream.next() => msg,
            };
            let Some(msg) = msg else { break };
            sequence::handle(&shared, msg.get_channel_name(), msg.get_payload_bytes()).await;
        }
        shared.connected.store(false, Ordering::Release);
        shared.links.lost();
        super::subscriptions::detach(&shared, None);
        tracing::warn!("redis subscription lost; reconnecting");
    }
}

/// Sleeps the current backoff with ±50 % jitter (so a cluster does not reconnect in lockstep)
/// and doubles it. Returns false when the engine is stopping.
pub(super) async fn pause(shared: &Shared, backoff: &mut Duration) -> bool {
    let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        () = shared.stop.cancelled() => false,
        () = tokio::time::sleep(jittered) => true,
    }
}

/// Installs the new connection and subscribes every channel someone still wants, settling
/// the callers waiting for a SUBSCRIBE meanwhile: their channels are among the wanted ones.
async fn resubscribe(
    shared: &Shared,
    sink: redis::aio::PubSubSink,
) -> Result<(), super::BrokerError> {
    let _serial = shared.commands.lock().await;
    let (wanted, waiting) = {
        let mut subs = shared.subs.lock();
        let wanted: Vec<String> = subs
            .channels
            .iter()
            .filter(|(_, sub)| sub.refs > 0)
            .map(|(channel, _)| channel.clone())
            .collect();
        (wanted, std::mem::take(&mut subs.waiting))
    };
    let result = shared.links.attach(shared, sink, &wanted).await;
    if let Ok(on) = &result {
        let mut subs = shared.subs.lock();
        for channel in &wanted {
            if let Some(sub) = subs.channels.get_mut(channel) {
                sub.on = Some(on.clone());
            }
        }
    }
    let result = result.map(drop);
    subscriptions::settle(waiting, &result);
    result
}
