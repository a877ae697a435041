//! Protocol encoding and decoding: the per-message costs every publish pays once (encode) and
//! every inbound frame pays (decode). `cargo bench --bench protocol`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roomcast::protocol::{decode_request, encode_message, message_parts};
use serde_json::value::RawValue;
use std::hint::black_box;

fn payload(bytes: usize) -> Box<RawValue> {
    let text = "x".repeat(bytes.saturating_sub(12));
    RawValue::from_string(format!("{{\"text\":\"{text}\"}}")).unwrap()
}

fn encoding(c: &mut Criterion) {
    let data = payload(100);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("message_100B", |b| {
        b.iter(|| {
            encode_message(
                black_box("lobby"),
                black_box(57),
                "alice",
                &data,
                1_764_057_600_000,
            )
        })
    });
    group.bench_function("message_parts_100B", |b| {
        b.iter(|| message_parts(black_box("lobby"), "alice", &data, 1_764_057_600_000))
    });
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let publish = r#"{"type":"publish","room":"lobby","id":3,"data":{"text":"hello there, a chat line of about a hundred bytes in all..."}}"#;
    let join = r#"{"type":"join","room":"lobby","since":41,"epoch":"9f2c0a1b2c3d4e5f","id":1}"#;
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish", |b| b.iter(|| decode_request(black_box(publish))));
    group.bench_function("join_resume", |b| {
        b.iter(|| decode_request(black_box(join)))
    });
    group.bench_function("bad_json", |b| {
        b.iter(|| decode_request(black_box("{not json")))
    });
    group.finish();
}

criterion_group!(benches, encoding, decoding);
criterion_main!(benches);
