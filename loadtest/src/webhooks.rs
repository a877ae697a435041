//! Counting roomcast's lifecycle webhooks against the truth the tester knows: a receiver (a
//! minimal HTTP/1.1 server on a given address, checking each request's signature) records every
//! event, and [`check`] compares `user_online`/`user_offline` per user with what the run did:
//! every user connected once, a churned user was away `churn_down_ms`, everyone closed at the
//! end. Away well under the debounce fires nothing; well over it, an offline and an online.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::report::Report;
use crate::rng::Rng;
use crate::scenario::Scenario;

/// Largest request body accepted (a batch of 1000 events with direct-message data).
const MAX_BODY: usize = 64 << 20;

/// What the receiver saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Deliveries per event id (more than 1: a repeat).
    pub ids: HashMap<String, u32>,
    /// Events per (type, user or room), repeats of one id counted once.
    pub counts: HashMap<(String, String), u64>,
    pub posts: u64,
    pub bad_signatures: u64,
    /// Per type: events arrived in each second since the receiver started.
    pub arrivals: HashMap<String, HashMap<u64, u64>>,
}

impl Tally {
    /// Events of `kind`, and the most that arrived within one second. At the end of a run
    /// every user's `user_offline` falls due within the time the users took to close, so the
    /// peak is what the cluster's senders deliver when they have a backlog.
    pub fn peak(&self, kind: &str) -> (u64, u64) {
        let Some(seconds) = self.arrivals.get(kind) else {
            return (0, 0);
        };
        (
            seconds.values().sum(),
            seconds.values().copied().max().unwrap_or(0),
        )
    }
}

/// The receiver: runs until the process ends.
pub struct Receiver {
    pub addr: SocketAddr,
    tally: Arc<Mutex<Tally>>,
}

impl Receiver {
    /// Listens on `listen` (`127.0.0.1:0` for a free port) and checks signatures with `secret`.
    pub async fn start(listen: &str, secret: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (t, secret) = (tally.clone(), Arc::new(secret));
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, started, t.clone(), secret.clone()));
            }
        });
        Ok(Self { addr, tally })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }
}

/// One keep-alive connection: request head, body by Content-Length, signature, answer.
async fn serve(
    stream: TcpStream,
    started: std::time::Instant,
    tally: Arc<Mutex<Tally>>,
    secret: Arc<String>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers: HashMap<String, String> = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let status = record(started, &tally, &secret, &headers, &body);
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Checks and records one request; returns the status line's code and reason.
fn record(
    started: std::time::Instant,
    tally: &Mutex<Tally>,
    secret: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> &'static str {
    let timestamp = headers
        .get("x-roomcast-timestamp")
        .cloned()
        .unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut t = tally.lock().unwrap();
    t.posts += 1;
    if headers.get("x-roomcast-signature") != Some(&format!("sha256={hex}")) {
        t.bad_signatures += 1;
        return "401 Unauthorized";
    }
    let Ok(batch) = serde_json::from_slice::<serde_json::Value>(body) else {
        return "400 Bad Request";
    };
    for event in batch["events"].as_array().into_iter().flatten() {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let seen = t.ids.entry(id).or_default();
        *seen += 1;
        if *seen > 1 {
            continue;
        }
        let subject = event["user"].as_str().or(event["room"].as_str());
        let key = (
            event["type"].as_str().unwrap_or_default().to_owned(),
            subject.unwrap_or_default().to_owned(),
        );
        let second = started.elapsed().as_secs();
        *t.arrivals
            .entry(key.0.clone())
            .or_default()
            .entry(second)
            .or_default() += 1;
        *t.counts.entry(key).or_default() += 1;
    }
    "200 OK"
}

/// The comparison with the truth.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Check {
    /// Distinct events received.
    pub events: u64,
    /// Deliveries of an id already received (the at-least-once window).
    pub repeats: u64,
    /// Events the truth expects and that did not come.
    pub missing: u64,
    /// Events beyond the truth (a second online, an offline nobody earned).
    pub extra: u64,
    /// Users whose truth cannot be told (away for about the debounce, the run had unplanned
    /// disconnects, or drawn to churn when the run churned fewer): only their balance (as many
    /// offlines as onlines) is checked, or the pair a user who did not churn has.
    pub unsure: u64,
    pub bad_signatures: u64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.bad_signatures == 0 && self.events > 0
    }
}

/// Whether user `index` of the run `run_id` churns: the first draw of its generator, as
/// `user::User::new` makes it.
fn churns(scenario: &Scenario, run_id: &str, index: u64) -> bool {
    let seed = crate::engine::seed_of(run_id);
    Rng::new(index ^ seed).unit() < scenario.churn
}

/// Compares `tally` with what the run did, the nodes' debounce being `debounce_ms`.
pub fn check(tally: &Tally, report: &Report, scenario: &Scenario, debounce_ms: u64) -> Check {
    let k = &report.connections;
    let clean = k.failed == 0
        && k.reconnects_failed == 0
        && k.unexpected_disconnects == 0
        && k.server_drains == 0;
    let away = scenario.churn_down_ms;
    // Margins for a loaded machine: the close and the reconnect take time on both sides.
    let churn_fires = if away * 2 < debounce_ms {
        Some(false)
    } else if away > debounce_ms * 2 {
        Some(true)
    } else {
        None
    };
    let mut c = Check {
        events: tally.ids.len() as u64,
        repeats: tally.ids.values().map(|n| u64::from(*n) - 1).sum(),
        bad_signatures: tally.bad_signatures,
        ..Check::default()
    };
    let count = |kind: &str, user: &str| {
        let key = (kind.to_owned(), user.to_owned());
        tally.counts.get(&key).copied().unwrap_or(0)
    };
    // A user drawn to churn may not have (its run closed first): as many as the run's count
    // of churns falls short of the draws may show one pair less without counting as missing.
    let drawn = (0..report.users)
        .filter(|i| churns(scenario, &report.run_id, *i))
        .count() as u64;
    let mut excused = drawn.saturating_sub(k.churn_disconnects);
    for index in 0..report.users {
        let user = format!("lt{}-u{index}", report.run_id);
        let (online, offline) = (count("user_online", &user), count("user_offline", &user));
        let mut churned = churns(scenario, &report.run_id, index);
        if churned && excused > 0 && churn_fires == Some(true) && (online, offline) == (1, 1) {
            excused -= 1;
            c.unsure += 1;
            churned = false;
        }
        let expected = match (clean, churned, churn_fires) {
            (true, false, _) => Some(1),
            (true, true, Some(fires)) => Some(1 + u64::from(fires)),
            _ => None,
        };
        match expected {
            Some(n) => {
                c.missing += n.saturating_sub(online) + n.saturating_sub(offline);
                c.extra += online.saturating_sub(n) + offline.saturating_sub(n);
            }
            None => {
                c.unsure += 1;
                c.missing += online.saturating_sub(offline) + u64::from(online == 0);
                c.extra += offline.saturating_sub(online);
            }
        }
    }
    c
}
