use std::io::Write;

use super::*;

fn config(mode: CompressionMode) -> Compression {
    Compression {
        mode,
        ..Compression::default()
    }
}

fn answer(offers: &[&str], mode: CompressionMode) -> Option<String> {
    negotiate(offers.iter().copied(), &config(mode)).map(|a| a.response())
}

/// Raw deflate of `data` by an independent encoder (flate2's write side), flushed like a
/// WebSocket client does, the tail removed.
fn client_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.flush().unwrap();
    let mut out = encoder.get_ref().clone();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

/// What a client's decompressor makes of a server message.
fn client_inflate(inflater: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

#[test]
fn offers_are_answered_per_mode() {
    use CompressionMode::{Context, Shared};
    let shared = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    // Chromium's offer, Firefox's, node ws's default.
    for offer in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
    ] {
        assert_eq!(answer(&[offer], Shared).as_deref(), Some(shared));
    }
    assert_eq!(
        answer(&["permessage-deflate"], Context).as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
    );
    // The client limits the window further, or asks for no context: it gets what it asked.
    assert_eq!(
        answer(&["permessage-deflate; server_max_window_bits=9"], Context).as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9")
    );
    assert_eq!(
        answer(&["permessage-deflate; server_no_context_takeover"], Context).as_deref(),
        Some(shared)
    );
    // A window zlib cannot compress with: messages compressed alone, the limit echoed.
    assert_eq!(
        answer(&["permessage-deflate; server_max_window_bits=8"], Context).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=8"
        )
    );
    assert_eq!(
        answer(&["permessage-deflate; server_max_window_bits=12"], Shared).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12"
        )
    );
}

#[test]
fn bad_offers_are_declined_and_the_next_one_taken() {
    let declined = [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; mystery",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        "x-webkit-deflate-frame",
        "",
    ];
    for offer in declined {
        assert_eq!(answer(&[offer], CompressionMode::Context), None, "{offer}");
    }
    // Several offers in one value and across header lines: the first acceptable wins.
    let agreed = negotiate(
        [
            "foo, permessage-deflate; mystery=1",
            "permessage-deflate; server_max_window_bits=\"11\", permessage-deflate",
        ],
        &config(CompressionMode::Context),
    )
    .unwrap();
    assert_eq!(agreed.context_bits, Some(10));
    assert_eq!(agreed.server_window_bits, 11);
    // A quoted comma does not split the list.
    let offer = parse_offer("permessage-deflate; client_max_window_bits=\"1\\5\"").unwrap();
    assert_eq!(offer.unwrap().client_max_window_bits, Some(Some(15)));
    assert_eq!(
        split_unquoted(',')("a; x=\"1,2\", b").collect::<Vec<_>>(),
        ["a; x=\"1,2\"", "b"]
    );
}

#[test]
fn nothing_is_agreed_when_compression_is_off() {
    let off = Compression {
        enabled: false,
        ..Compression::default()
    };
    assert_eq!(negotiate(["permessage-deflate"], &off), None);
}

#[test]
fn messages_compressed_alone_inflate_with_a_fresh_decompressor_each() {
    let text =
        br#"{"type":"message","room":"lobby","data":{"text":"hello hello hello"}}"#.repeat(8);
    let first = compress_alone(&text, 1).unwrap();
    let again = compress_alone(&text, 6).unwrap();
    assert!(first.len() < text.len() / 4, "{} bytes", first.len());
    for data in [&first, &again] {
        let mut fresh = Decompress::new_with_window_bits(false, 15);
        assert_eq!(client_inflate(&mut fresh, data), text);
    }
    // Nothing gained: left uncompressed.
    assert_eq!(compress_alone(b"ab", 1), None);
}

#[test]
fn client_messages_inflate_within_the_limit_and_a_bomb_stops_one_byte_past_it() {
    let text = "chat line ".repeat(100);
    let data = client_deflate(text.as_bytes());
    assert_eq!(inflate(&data, 1000).unwrap(), text.as_bytes());
    assert_eq!(inflate(&data, 999), Err(InflateError::TooBig));
    // 100 MB of zeros in about 100 KB: refused after at most one step past a 64 KiB limit.
    let bomb = client_deflate(&vec![0; 100 << 20]);
    assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
    assert_eq!(inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
    assert_eq!(
        inflate(&[0xff, 0xff, 0xff], 1000),
        Err(InflateError::Corrupt)
    );
    // The pooled decompressor is fine after both.
    assert_eq!(inflate(&data, 1000).unwrap(), text.as_bytes());
    // A message ended with a final block (BFINAL) is accepted too.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(b"final").unwrap();
    assert_eq!(inflate(&encoder.finish().unwrap(), 100).unwrap(), b"final");
}

#[test]
fn context_compression_survives_a_dropped_compressor() {
    let agreed = negotiate(["permessage-deflate"], &config(CompressionMode::Context)).unwrap();
    let mut deflater = Deflater::new(agreed);
    let mut client = Decompress::new_with_window_bits(false, 15);
    let line = br#"{"type":"message","room":"lobby","data":{"text":"hi there"}}"#;
    let now = Instant::now();
    let first = deflater.compress_in_context(line, now).unwrap();
    let second = deflater.compress_in_context(line, now).unwrap();
    assert!(
        second.len() * 3 < first.len(),
        "{} then {}",
        first.len(),
        second.len()
    );
    assert_eq!(client_inflate(&mut client, &first), line);
    assert_eq!(client_inflate(&mut client, &second), line);
    let idle = agreed.idle;
    assert_eq!(idle, Compression::default().idle());
    deflater.drop_if_idle(now + idle / 2);
    assert!(deflater.holds_compressor(), "not idle yet");
    deflater.drop_if_idle(now + idle);
    assert!(!deflater.holds_compressor());
    // A fresh compressor; the client's decompressor kept its window, and that is fine.
    let third = deflater.compress_in_context(line, now + idle).unwrap();
    assert_eq!(third.len(), first.len());
    assert_eq!(client_inflate(&mut client, &third), line);
}

/// The memory figures in docs/operations.md ("Compression"):
/// `cargo test --lib measure_compressor_memory -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, read by hand"]
fn measure_compressor_memory() {
    fn rss_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    for bits in [9u8, 10, 11, 15] {
        let before = rss_kb();
        let mut all = Vec::new();
        for _ in 0..500 {
            let mut c = Compress::new_with_window_bits(flate2::Compression::new(1), false, bits);
            compress_flush(
                &mut c,
                &b"{\"type\":\"message\",\"room\":\"lobby\",\"data\":\"hi there\"}".repeat(3),
            )
            .unwrap();
            all.push(c);
        }
        let after = rss_kb();
        println!("bits {bits}: {} KiB per compressor", (after - before) / 500);
        drop(all);
    }
    let before = rss_kb();
    let mut all = Vec::new();
    for _ in 0..500 {
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut out = Vec::with_capacity(100);
        d.decompress_vec(
            &[0x4a, 0x04, 0, 0, 0, 0xff, 0xff],
            &mut out,
            FlushDecompress::Sync,
        )
        .unwrap();
        all.push(d);
    }
    println!(
        "inflate: {} KiB per decompressor",
        (rss_kb() - before) / 500
    );
}

#[test]
fn a_socket_that_agreed_holds_little_until_it_compresses_in_context() {
    // Behind the socket's pointer (docs/operations.md, "Compression"): the terms, and in
    // context mode the window once it sends.
    let size = std::mem::size_of::<Deflater>();
    assert!(size <= 112, "{size} bytes");
}
