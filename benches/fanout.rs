//! Hub fan-out: one encoded frame queued on every member of a room, the per-delivery cost of
//! a broadcast inside the node (the socket writes come after, batched per connection).
//! `cargo bench --bench fanout`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::hub::Hub;
use roomcast::session::{Outbox, QueueLimits, SessionHandle};

use tungstenite::Utf8Bytes;

const LIMITS: QueueLimits = QueueLimits {
    frames: 1024,
    bytes: 1 << 20,
};

/// A room of `members` live sessions; the receivers are kept so the queues stay open.
fn room(members: usize) -> (Hub, Vec<Outbox>) {
    let hub = Hub::new();
    let mut receivers = Vec::with_capacity(members);
    for i in 0..members {
        let (session, rx) = SessionHandle::new(format!("u{i}").into(), LIMITS);
        hub.add_pending("big", &session, false, 1024);
        hub.activate("big", session.id(), "joined".into(), Vec::new(), 0);
        receivers.push(rx);
    }
    (hub, receivers)
}

fn fanout(c: &mut Criterion) {
    let frame = Utf8Bytes::from(format!(
        "{{\"type\":\"message\",\"data\":\"{}\"}}",
        "x".repeat(100)
    ));
    let mut group = c.benchmark_group("fanout");
    for members in [10usize, 5_000] {
        group.throughput(Throughput::Elements(members as u64));
        // Each iteration delivers one message to every member, then the queues are drained
        // outside the timing so they never fill.
        let (hub, mut receivers) = room(members);
        let mut offset = 0u64;
        group.bench_function(format!("deliver_to_{members}"), |b| {
            b.iter_batched(
                || {
                    for outbox in receivers.iter_mut() {
                        outbox.take();
                        outbox.written();
                    }
                    offset += 1;
                    offset
                },
                |offset| hub.deliver("big", offset, &frame),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
