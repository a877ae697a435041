//! `--deflate` against real roomcast nodes with compression on: the server's answer is
//! negotiated on every connection, compressed messages are inflated and checked like any
//! other (no loss, order, payloads), and wire bytes per delivery drop for compressible
//! payloads; without the flag nothing is negotiated and the wire bytes are the plain frames.
//! The binary's `--deflate` reaches its worker processes and works over `wss://` too.

mod common;

use common::tls::TlsFrontEnd;
use common::{Server, assert_clean, run, scenario, smoke_binary};
use loadtest::Report;
use loadtest::pad::PadKind;
use roomcast::config::CompressionMode;

/// Rooms of 10, 5 messages/s each for 2 s: a few thousand deliveries in a few seconds.
fn chat(url: &str, pad: PadKind, bytes: usize, deflate: bool) -> loadtest::Scenario {
    let mut s = scenario("smoke", &[url.to_string()]);
    s.users = 20;
    s.rooms[0].count = 2;
    s.rooms[0].size = 10;
    s.direct_per_sec = 0.0;
    s.publish_per_sec = 5.0;
    s.duration_secs = 2.0;
    s.message_bytes = bytes;
    s.pad = pad;
    s.deflate = deflate;
    s
}

async fn compression_server(mode: CompressionMode, min_bytes: usize) -> Server {
    Server::with(|c| {
        c.compression.enabled = true;
        c.compression.mode = mode;
        c.compression.min_bytes = min_bytes;
    })
    .await
}

fn wire_per_delivery(r: &Report) -> f64 {
    let m = &r.messages;
    assert!(m.deliveries > 0, "{}", r.table());
    assert_eq!(
        m.wire_bytes_per_delivery,
        m.wire_bytes_received as f64 / m.deliveries as f64
    );
    m.wire_bytes_per_delivery
}

/// Without `--deflate` nothing is offered, so nothing is negotiated, and what is read is the
/// plain frames: their text plus a header of 2 to 4 bytes each, and per connection the
/// `welcome` and `joined` (read before the frames counted in `bytes_received`).
fn assert_plain(r: &Report) {
    let m = &r.messages;
    assert_eq!(r.connections.deflate_negotiated, 0, "{}", r.table());
    assert!(m.wire_bytes_received > m.bytes_received, "{}", r.table());
    let extra = m.wire_bytes_received - m.bytes_received;
    assert!(
        extra <= 4 * m.frames_received + 600 * r.connections.ok,
        "{extra} bytes beside the text: only frame headers, welcomes and joins\n{}",
        r.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_negotiates_and_cuts_wire_bytes_for_json_payloads() {
    let server = compression_server(CompressionMode::Shared, 256).await;
    let plain = run(&chat(&server.url(), PadKind::Json, 2048, false)).await;
    assert_clean(&plain);
    assert_plain(&plain);

    let compressed = run(&chat(&server.url(), PadKind::Json, 2048, true)).await;
    assert_clean(&compressed);
    let k = &compressed.connections;
    assert_eq!(
        k.deflate_negotiated,
        k.ok,
        "every connection negotiated\n{}",
        compressed.table()
    );
    // Inflated, the messages are the same size as without compression.
    let per_frame = |r: &Report| r.messages.bytes_received / r.messages.frames_received;
    assert!(per_frame(&compressed).abs_diff(per_frame(&plain)) < 200);
    let (before, after) = (wire_per_delivery(&plain), wire_per_delivery(&compressed));
    println!("wire bytes per delivery: {before:.1} plain, {after:.1} compressed");
    assert!(
        after * 2.0 < before,
        "2 KB JSON records compress at least 2×: {before:.0} → {after:.0} bytes per delivery\n{}",
        compressed.table()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_mode_compresses_chat_lines_and_plain_clients_are_unchanged() {
    let server = compression_server(CompressionMode::Context, 0).await;
    let plain = run(&chat(&server.url(), PadKind::Words, 100, false)).await;
    assert_clean(&plain);
    assert_plain(&plain);

    let compressed = run(&chat(&server.url(), PadKind::Words, 100, true)).await;
    assert_clean(&compressed);
    let k = &compressed.connections;
    assert_eq!(k.deflate_negotiated, k.ok, "{}", compressed.table());
    let (before, after) = (wire_per_delivery(&plain), wire_per_delivery(&compressed));
    println!("wire bytes per delivery: {before:.1} plain, {after:.1} compressed");
    assert!(
        after * 1.3 < before,
        "chat lines with the context kept: {before:.0} → {after:.0} bytes per delivery\n{}",
        compressed.table()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_compression_off_declines_and_the_run_is_plain() {
    let server = Server::with(|c| c.compression.enabled = false).await;
    let r = run(&chat(&server.url(), PadKind::Words, 300, true)).await;
    assert_clean(&r);
    assert_plain(&r);
    assert!(r.table().contains("permessage-deflate on 0 connections"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_reaches_worker_processes_and_inflates_under_tls() {
    // Default compression settings (shared mode, min_bytes 128): 600-byte padding is above.
    let server = Server::start().await;
    let front = TlsFrontEnd::start(server.addr);
    let url = front.url("127.0.0.1");
    let extra = ["--insecure", "--deflate", "--message-bytes", "600"];
    let (_ran, r) = smoke_binary(&url, 2, &extra).await;
    drop(front);
    server.stop().await;
    assert_clean(&r);
    assert_eq!((r.mode.as_str(), r.workers), ("processes", 2));
    let k = &r.connections;
    assert_eq!(k.deflate_negotiated, k.ok, "{}", r.table());
    // `x` padding compresses to almost nothing: far fewer bytes read than the text.
    let m = &r.messages;
    assert!(
        m.wire_bytes_received * 3 < m.bytes_received,
        "{} wire bytes for {} bytes of text\n{}",
        m.wire_bytes_received,
        m.bytes_received,
        r.table()
    );
}
