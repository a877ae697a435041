//! Assembles a node from its configuration and serves it until shutdown. The only module that
//! knows the concrete broker engine.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::broker::lifecycle::LifecycleOptions;
use crate::broker::memory::{HistoryBudget, MemoryBroker};
use crate::broker::redis::{PublishBatch, RedisBroker, RedisOptions};
use crate::broker::{Broker, BrokerError, DurableRule, Presence, Retention};
use crate::config::{BrokerKind, Config};
use crate::hub::Hub;
use crate::node::{HubDelivery, Node};
use crate::{accept, api, demo, http, telemetry, webhooks, ws};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("starting the broker failed: {0}")]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Webhooks(#[from] webhooks::SenderError),
}

/// The router: `/ws`, `/healthz`, `/readyz`, `/metrics`, `/api`, the browser client at
/// `/roomcast.js` and the demo at `/` when enabled, JSON 404 for anything else.
pub fn app(node: Node) -> Router {
    let mut router = Router::new();
    if node.config().serve_client {
        router = router.route("/roomcast.js", get(demo::client));
    }
    if node.config().demo {
        router = router.route("/", get(demo::page));
    }
    router
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(telemetry::handler))
        .nest("/api", api::router())
        .fallback(http::not_found)
        .with_state(node)
}

/// Builds the node for `config` (broker engine included) and its background tasks, which end
/// when `stop` is cancelled.
pub fn build(config: Config, stop: &CancellationToken) -> Result<Node, ServerError> {
    let id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("n-{:08x}", rand::random::<u32>()));
    telemetry::install(&id);
    // With compression on, a room frame is compressed once and shared by its members.
    let hub = if config.compression.enabled {
        Hub::sharing_compressed(config.compression.min_bytes)
    } else {
        Hub::new()
    };
    let deliver = Arc::new(HubDelivery(hub.clone()));
    let limits = HistoryBudget {
        size: config.history.size,
        ttl: config.history.ttl(),
        max_room_bytes: config.history.max_room_bytes,
        max_bytes: config.history.max_bytes,
    };
    let retention = retention(&config.history);
    let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = match config.broker {
        BrokerKind::Memory => {
            let broker = Arc::new(MemoryBroker::new(limits, deliver).with_retention(retention));
            spawn_sweeper(&broker, stop.clone());
            if config.webhooks.enabled() {
                broker.enable_lifecycle(lifecycle_options(&config));
                webhooks::spawn(
                    broker.clone(),
                    config.webhooks.clone(),
                    id.clone(),
                    stop.clone(),
                )?;
            }
            (broker.clone(), broker)
        }
        BrokerKind::Redis => {
            let r = &config.redis;
            let opts = RedisOptions {
                url: r.url.clone(),
                prefix: r.prefix.clone(),
                node_id: id.clone(),
                history: limits,
                presence_lease: r.presence_lease(),
                unsubscribe_delay: r.unsubscribe_delay(),
                command_timeout: r.command_timeout(),
                publish_batch: PublishBatch {
                    max: r.publish_batch_max,
                    pipeline: r.publish_batches_in_flight,
                },
                retention,
            };
            let broker = Arc::new(if r.cluster_nodes.is_empty() {
                RedisBroker::start(opts, deliver, stop.clone())?
            } else {
                RedisBroker::start_cluster(&r.cluster_nodes, opts, deliver, stop.clone())?
            });
            if config.webhooks.enabled() {
                start_webhooks(&broker, &config, &id, stop)?;
            }
            (broker.clone(), broker)
        }
    };
    let node = Node::new(id, config, hub, broker, presence)?;
    spawn_housekeeping(&node, stop.clone());
    crate::node::rebalance::spawn(&node, stop.clone());
    Ok(node)
}

/// The brokers' view of `[history]`'s epoch TTL and durable rooms.
fn retention(history: &crate::config::History) -> Retention {
    Retention {
        epoch_ttl: history.epoch_ttl(),
        durable: history
            .durable
            .iter()
            .map(|d| DurableRule {
                pattern: d.pattern.clone(),
                max_age: Duration::from_secs(d.max_age_s),
                max_count: d.max_count,
            })
            .collect(),
    }
}

/// Lifecycle events: the engine decides them, this node's sender delivers its share.
fn start_webhooks(
    broker: &Arc<RedisBroker>,
    config: &Config,
    id: &str,
    stop: &CancellationToken,
) -> Result<(), ServerError> {
    broker.enable_lifecycle(lifecycle_options(config));
    webhooks::spawn(
        broker.clone(),
        config.webhooks.clone(),
        id.to_owned(),
        stop.clone(),
    )?;
    Ok(())
}

fn lifecycle_options(config: &Config) -> LifecycleOptions {
    let hooks = &config.webhooks;
    LifecycleOptions {
        debounce: hooks.debounce(),
        events: hooks.events.clone(),
        capacity: hooks.queue_capacity,
    }
}

/// Every 5 s: forgets idle IPs, shrinks the hub's tables after a crowd left, and folds the
/// metrics' histogram samples into their buckets (see [`telemetry::upkeep`]).
fn spawn_housekeeping(node: &Node, stop: CancellationToken) {
    let admission = Arc::downgrade(node.admission());
    let hub = node.hub().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => match admission.upgrade() {
                    Some(admission) => {
                        admission.sweep();
                        hub.shrink();
                        telemetry::upkeep();
                    }
                    None => return,
                },
            }
        }
    });
}

fn spawn_sweeper(broker: &Arc<MemoryBroker>, stop: CancellationToken) {
    let weak = Arc::downgrade(broker);
    let period = broker.sweep_every();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => match weak.upgrade() {
                    Some(broker) => broker.sweep(std::time::Instant::now()),
                    None => return,
                },
            }
        }
    });
}

/// Serves `config` on `listener` until `shutdown` resolves, then drains: readiness answers 503
/// and new upgrades are refused while every session flushes its queue and gets close 1001; the
/// listener closes once all sessions ended or `shutdown_grace` passed, whichever is first.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let stop = CancellationToken::new();
    let node = build(config, &stop)?;
    serve(node, stop, listener, shutdown).await
}

/// Serves a node made by [`build`] (with its `stop`) on `listener`, as [`run`] does. For a
/// caller that builds first, so that what only starting can check (the key file, the broker)
/// stops it before it listens.
pub async fn serve(
    node: Node,
    stop: CancellationToken,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let grace = node.config().shutdown_grace();
    let router = app(node.clone());
    let accepting = {
        let (node, stop) = (node.clone(), stop.clone());
        async move { accept::serve(listener, router, &node, stop).await }
    };
    let mut server = tokio::spawn(accepting);
    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            // The accept loop never ends on its own; it did, so it panicked. Shut sessions
            // down anyway.
            node.begin_shutdown();
            stop.cancel();
            return result.map_err(|join| ServerError::Io(std::io::Error::other(join)));
        }
    }
    tracing::info!(
        sessions = node.tasks().len(),
        "shutting down: draining sessions"
    );
    node.begin_shutdown();
    // The listener stays open meanwhile so balancers read 503 from /readyz, not a refusal.
    let deadline = tokio::time::Instant::now() + grace;
    if tokio::time::timeout_at(deadline, node.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = node.tasks().len(),
            "grace period over; dropping sessions"
        );
    }
    stop.cancel();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match timeout(left.max(Duration::from_millis(100)), server).await {
        Ok(Err(join)) => Err(ServerError::Io(std::io::Error::other(join))),
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}
