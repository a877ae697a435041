//! One `info` line per closed connection: who (address, user), for how long, and how it ended
//! (the close code, or none when the client went away). Abuse closes (4029), protocol
//! violations (1002) and slow consumers (4000) show here without debug logging.
//!
//! At most [`LINES_PER_SEC`] a second (bursts of [`BURST`]): an attack that opens and closes
//! thousands of connections must not flood the log or spend the node's CPU on it. Lines left
//! out are counted and reported by the next line written (`suppressed`).

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::node::limiter::{TokenBucket, Verdict};
use crate::protocol::CloseCode;

const LINES_PER_SEC: u32 = 50;
const BURST: u32 = 200;

/// The bucket, and the lines left out since the last one written.
static BUDGET: LazyLock<Mutex<(TokenBucket, u64)>> =
    LazyLock::new(|| Mutex::new((TokenBucket::new(LINES_PER_SEC, BURST, u32::MAX), 0)));

/// Logs the end of a connection, unless over the budget.
pub(super) fn closed(peer: IpAddr, user: &str, lasted: Duration, code: Option<CloseCode>) {
    // With `info` off (the benches run at `warn`), no line and no shared lock.
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let suppressed = {
        let mut budget = BUDGET.lock();
        if budget.0.check(Instant::now()) != Verdict::Allow {
            budget.1 += 1;
            return;
        }
        std::mem::take(&mut budget.1)
    };
    tracing::info!(
        %peer,
        user,
        secs = lasted.as_secs_f64(),
        code = code.map(CloseCode::code),
        suppressed,
        "connection closed"
    );
}
