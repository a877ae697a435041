//! Lifecycle webhooks: the sender. Takes batches of decided events from the engine's
//! [`Outbox`] (shared by the cluster), POSTs them signed to `webhooks.url` as
//! `{"events":[…]}`, and settles each event: delivered on a 2xx answer, otherwise retried with
//! exponential backoff until `webhooks.max_attempts`, then dropped as a dead letter. One POST in
//! flight per node; the nodes share the work. Uses the broker's outbox, the config, and
//! the backend's request signature ([`crate::backend::sign`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::sign;
use crate::broker::lifecycle::{Claimed, Outbox, Outcome};
use crate::config::Webhooks;

/// Why the sender could not start.
#[derive(Debug, thiserror::Error)]
#[error("webhooks: cannot build the HTTP client: {0}")]
pub struct SenderError(#[from] reqwest::Error);

/// Starts this node's sender; it stops when `stop` is cancelled. Events a node took and had no
/// time to settle come back to the others after [`Webhooks::hold`].
pub fn spawn(
    outbox: Arc<dyn Outbox>,
    config: Webhooks,
    node: String,
    stop: CancellationToken,
) -> Result<(), SenderError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout())
        .no_proxy()
        .build()?;
    let sender = Sender {
        outbox,
        config,
        node,
        client,
    };
    tokio::spawn(async move { sender.run(stop).await });
    Ok(())
}

struct Sender {
    outbox: Arc<dyn Outbox>,
    config: Webhooks,
    node: String,
    client: reqwest::Client,
}

impl Sender {
    async fn run(self, stop: CancellationToken) {
        let mut full = false;
        loop {
            // A full batch suggests more are waiting: look again at once.
            if !full {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(self.config.linger()) => {}
                }
            } else if stop.is_cancelled() {
                return;
            }
            full = match self.round().await {
                Ok(full) => full,
                Err(err) => {
                    tracing::warn!(%err, "webhook round failed");
                    false
                }
            };
        }
    }

    /// Takes one batch, sends it and settles it; true if the batch was full.
    async fn round(&self) -> Result<bool, crate::broker::BrokerError> {
        let max = self.config.batch_max;
        let claim = self.outbox.claim(max, self.config.hold()).await?;
        metrics::gauge!("roomcast_webhook_queue_depth").set(claim.depth as f64);
        if claim.events.is_empty() {
            return Ok(false);
        }
        let sent = self.post(&claim.events).await;
        let outcomes: Vec<(String, Outcome)> = claim
            .events
            .iter()
            .map(|event| (event.id.clone(), self.outcome(event, &sent)))
            .collect();
        self.outbox.settle(&outcomes).await?;
        Ok(claim.events.len() == max)
    }

    /// What becomes of `event` after its batch's POST went as `sent`; counts it.
    fn outcome(&self, event: &Claimed, sent: &Result<(), String>) -> Outcome {
        match sent {
            Ok(()) => {
                metrics::counter!("roomcast_webhook_events_delivered_total").increment(1);
                Outcome::Delivered
            }
            Err(_) if event.attempts >= self.config.max_attempts => {
                metrics::counter!("roomcast_webhook_dead_letters_total").increment(1);
                tracing::warn!(id = event.id, "webhook event dropped after its last try");
                Outcome::Dead
            }
            Err(_) => {
                metrics::counter!("roomcast_webhook_retries_total").increment(1);
                Outcome::Retry(self.config.backoff(event.attempts))
            }
        }
    }

    /// POSTs `events` as one signed batch; `Err` says why it did not count as delivered.
    async fn post(&self, events: &[Claimed]) -> Result<(), String> {
        let body = batch_body(events);
        let timestamp = crate::broker::unix_ms();
        let signature = sign::signature(self.config.secret.as_bytes(), timestamp, body.as_bytes());
        let started = std::time::Instant::now();
        let answer = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(sign::TIMESTAMP_HEADER, timestamp)
            .header(sign::SIGNATURE_HEADER, signature)
            .header("x-roomcast-node", &self.node)
            .body(body)
            .send()
            .await;
        metrics::histogram!("roomcast_webhook_post_seconds").record(started.elapsed());
        let status = match answer {
            Ok(answer) => answer.status(),
            Err(err) => {
                metrics::counter!("roomcast_webhook_posts_total", "result" => "error").increment(1);
                tracing::warn!(%err, "webhook POST failed");
                return Err(err.to_string());
            }
        };
        let result = if status.is_success() { "ok" } else { "refused" };
        metrics::counter!("roomcast_webhook_posts_total", "result" => result).increment(1);
        if status.is_success() {
            Ok(())
        } else {
            tracing::warn!(%status, "webhook POST refused");
            Err(format!("status {status}"))
        }
    }
}

/// `{"events":[…]}` from the stored JSON objects, joined without parsing them again.
fn batch_body(events: &[Claimed]) -> String {
    let size = events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16;
    let mut body = String::with_capacity(size);
    body.push_str("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.json);
    }
    body.push_str("]}");
    body
}
