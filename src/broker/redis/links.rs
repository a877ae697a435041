//! Where the engine's subscriptions live: the one subscription connection of a single Redis
//! (kept up by [`subscriber`]), or one link per master of a Redis Cluster ([`shards`]). The
//! rest of the engine subscribes and unsubscribes through [`Links`] alone, and records on each
//! channel the name of the link Redis confirmed it on, so that a lost link detaches exactly
//! its own channels.
//!
//! [`subscriber`]: super::subscriber

use std::sync::Arc;

use parking_lot::Mutex;
use redis::aio::PubSubSink;

use super::shards::Shards;
use super::subscriptions::SUBSCRIBE_MAX;
use super::{BrokerError, Shared};

/// The link name channels on the single Redis's connection record; cluster links are named
/// by their master's address.
const SINGLE: &str = "redis";

pub(super) enum Links {
    /// The live subscription connection's command half; `None` while reconnecting.
    Single(Mutex<Option<PubSubSink>>),
    Cluster(Shards),
}

impl Links {
    pub(super) fn single() -> Self {
        Self::Single(Mutex::new(None))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub(super) fn shards(&self) -> Option<&Shards> {
        match self {
            Self::Cluster(shards) => Some(shards),
            Self::Single(_) => None,
        }
    }

    /// Single mode: subscribes `channels` on the new connection `sink`, then installs it as
    /// the live one. Returns the link name to record on the channels.
    pub(super) async fn attach(
        &self,
        shared: &Shared,
        mut sink: PubSubSink,
        channels: &[String],
    ) -> Result<Arc<str>, BrokerError> {
        let Self::Single(live) = self else {
            return Err(BrokerError::Unavailable("not a single Redis".into()));
        };
        subscribe_on(shared, &mut sink, channels).await?;
        *live.lock() = Some(sink);
        Ok(Arc::from(SINGLE))
    }

    /// Single mode: the live connection is gone; commands wait for the next [`Self::attach`].
    pub(super) fn lost(&self) {
        if let Self::Single(live) = self {
            *live.lock() = None;
        }
    }

    /// SUBSCRIBEs `channels`; for each, the name of the link it is on, or why not.
    pub(super) async fn subscribe(
        &self,
        shared: &Shared,
        channels: &[String],
    ) -> Vec<Result<Arc<str>, BrokerError>> {
        match self {
            Self::Cluster(shards) => shards.subscribe(shared, channels).await,
            Self::Single(live) => {
                let sink = live.lock().clone();
                let result = match sink {
                    Some(mut sink) => subscribe_on(shared, &mut sink, channels).await,
                    None => Err(BrokerError::Unavailable(
                        "redis subscription is reconnecting".into(),
                    )),
                };
                vec![result.map(|()| Arc::from(SINGLE)); channels.len()]
            }
        }
    }

    /// UNSUBSCRIBEs `channel` from link `on`. A failure means the link is gone, and with it
    /// the subscription, so there is nothing to report.
    pub(super) async fn unsubscribe(&self, shared: &Shared, channel: &str, on: &str) {
        match self {
            Self::Cluster(shards) => shards.unsubscribe(shared, channel, on).await,
            Self::Single(live) => {
                let sink = live.lock().clone();
                if let Some(mut sink) = sink {
                    let _ = shared.call(sink.unsubscribe(channel)).await;
                }
            }
        }
    }
}

/// SUBSCRIBEs `channels` on a single Redis's subscription connection, [`SUBSCRIBE_MAX`] per
/// command. Stops at the first failure: the connection is most likely gone, and the reconnect
/// subscribes everything still wanted.
async fn subscribe_on(
    shared: &Shared,
    sink: &mut PubSubSink,
    channels: &[String],
) -> Result<(), BrokerError> {
    for chunk in channels.chunks(SUBSCRIBE_MAX) {
        shared.call(sink.subscribe(chunk)).await?;
    }
    Ok(())
}
