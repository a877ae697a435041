//! Polls every node's `/readyz` through the run, so the check can hold readiness to the truth
//! the campaign knows (which faults leave a node unable to complete Redis commands).

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub const EVERY: Duration = Duration::from_millis(200);

/// One answer: `ready` is `None` when the node did not answer (down, or not within `EVERY`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub node: usize,
    pub at: u64,
    pub ready: Option<bool>,
}

pub async fn poll(ports: Vec<u16>, start: Instant, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return samples,
            _ = tick.tick() => {}
        }
        for (node, port) in ports.iter().enumerate() {
            let at = start.elapsed().as_millis() as u64;
            let ready = tokio::time::timeout(EVERY, readyz(*port))
                .await
                .ok()
                .flatten();
            samples.push(Sample { node, at, ready });
        }
    }
}

async fn readyz(port: u16) -> Option<bool> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    Some(&head[9..12] == b"200")
}
