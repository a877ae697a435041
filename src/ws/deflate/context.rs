//! The context-takeover compressor: a small deflate encoder (LZ77 over the socket's last
//! window of sent bytes, fixed Huffman codes) whose only state between messages is that window.
//!
//! Why not zlib's: a zlib-rs compressor allocates a fixed 128 KiB hash table and 64 KiB of
//! buffers whatever the window, about 190 KiB per socket that is sending (measured), which made
//! context mode cost more per busy socket than the peers it is meant to beat. Here a socket
//! keeps `2^window_bits` bytes (1 KiB by default); the hash chains are rebuilt per message in
//! scratch space shared by the thread. Fixed codes are what zlib picks anyway for blocks as
//! short as chat lines (a dynamic block's code tables cost more than they save); long messages
//! compress somewhat less than with zlib (see the tests).

use std::cell::RefCell;

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const HASH_BITS: u32 = 12;
/// Scratch bytes a thread keeps between messages (message and window; the chains are 4 bytes
/// a byte more).
const SCRATCH_KEEP: usize = 64 * 1024;
const NONE: u32 = u32::MAX;

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Per-thread scratch for one message: history and message side by side, and the hash chains.
#[derive(Default)]
struct Scratch {
    data: Vec<u8>,
    head: Vec<u32>,
    prev: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One socket's compressor with context takeover.
#[derive(Debug)]
pub struct ContextEncoder {
    /// The last bytes sent, at most `window` of them: what the client's decompressor holds
    /// and the next message may refer to.
    history: Vec<u8>,
    window: usize,
    /// How many earlier positions a match search looks at (from the level).
    chain: usize,
}

impl ContextEncoder {
    /// `window_bits` 9–15 (the window the client was told), `level` 1–9.
    pub fn new(window_bits: u8, level: u32) -> Self {
        Self {
            history: Vec::new(),
            window: 1 << window_bits,
            chain: 4 << level.clamp(1, 9),
        }
    }

    /// Bytes held between messages.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.history.capacity()
    }

    /// `text` as one compressed message (the tail dropped), which may refer back into what
    /// this encoder compressed before.
    pub fn compress(&mut self, text: &[u8]) -> Vec<u8> {
        let out = SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            scratch.data.clear();
            scratch.data.extend_from_slice(&self.history);
            scratch.data.extend_from_slice(text);
            let out = encode(scratch, self.history.len(), self.window, self.chain);
            // A long message grew the scratch: a thread keeps at most SCRATCH_KEEP of it.
            if scratch.data.capacity() > SCRATCH_KEEP {
                *scratch = Scratch::default();
            }
            out
        });
        self.remember(text);
        out
    }

    /// Keeps the last `window` bytes sent, in exactly `window` bytes of memory.
    fn remember(&mut self, text: &[u8]) {
        let keep = &text[text.len().saturating_sub(self.window)..];
        let overflow = (self.history.len() + keep.len()).saturating_sub(self.window);
        self.history.drain(..overflow);
        self.history.reserve_exact(self.window - self.history.len());
        self.history.extend_from_slice(keep);
    }
}

/// Compresses `scratch.data[start..]`, with `scratch.data[..start]` as the window before it.
fn encode(scratch: &mut Scratch, start: usize, window: usize, chain: usize) -> Vec<u8> {
    let Scratch { data, head, prev } = scratch;
    head.clear();
    head.resize(1 << HASH_BITS, NONE);
    prev.clear();
    prev.resize(data.len(), NONE);
    for pos in 0..start {
        insert(data, head, prev, pos);
    }
    let mut bits = Bits::with_capacity(data.len() - start);
    // A fixed-code block, not final: BFINAL 0, BTYPE 01.
    bits.put(0b010, 3);
    let mut pos = start;
    while pos < data.len() {
        let (len, dist) = longest(data, head, prev, pos, window, chain);
        if len >= MIN_MATCH {
            bits.length(len);
            bits.distance(dist);
            for p in pos..pos + len {
                insert(data, head, prev, p);
            }
            pos += len;
        } else {
            bits.literal(data[pos]);
            insert(data, head, prev, pos);
            pos += 1;
        }
    }
    bits.code(256);
    // The sync flush: an empty stored block, whose LEN/NLEN (the tail) the wire leaves out.
    bits.put(0, 3);
    bits.finish()
}

fn hash(data: &[u8], pos: usize) -> Option<usize> {
    let b = data.get(pos..pos + MIN_MATCH)?;
    let key = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
    Some((key.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize)
}

fn insert(data: &[u8], head: &mut [u32], prev: &mut [u32], pos: usize) {
    if let Some(h) = hash(data, pos) {
        prev[pos] = head[h];
        head[h] = pos as u32;
    }
}

/// The longest earlier match for `pos` within `window - 1` bytes back: (length, distance).
fn longest(
    data: &[u8],
    head: &[u32],
    prev: &[u32],
    pos: usize,
    window: usize,
    chain: usize,
) -> (usize, usize) {
    let Some(h) = hash(data, pos) else {
        return (0, 0);
    };
    let max = (data.len() - pos).min(MAX_MATCH);
    let (mut best, mut best_dist) = (0, 0);
    let mut candidate = head[h];
    for _ in 0..chain {
        if candidate == NONE {
            break;
        }
        let at = candidate as usize;
        let dist = pos - at;
        if dist >= window {
            break;
        }
        // Cannot beat the best so far unless it matches one byte further (zlib's check).
        if best > 0 && (best >= max || data[at + best] != data[pos + best]) {
            candidate = prev[at];
            continue;
        }
        let len = data[at..at + max]
            .iter()
            .zip(&data[pos..pos + max])
            .take_while(|(a, b)| a == b)
            .count();
        if len > best {
            (best, best_dist) = (len, dist);
            if len == max {
                break;
            }
        }
        candidate = prev[at];
    }
    (best, best_dist)
}

/// A deflate bit stream: bits go in least significant first.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    count: u32,
}

impl Bits {
    fn with_capacity(len: usize) -> Self {
        Self {
            out: Vec::with_capacity(len + len / 8 + 16),
            acc: 0,
            count: 0,
        }
    }

    fn put(&mut self, value: u32, width: u32) {
        self.acc |= u64::from(value) << self.count;
        self.count += width;
        while self.count >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code, whose bits go in most significant first.
    fn huffman(&mut self, code: u32, width: u32) {
        self.put(code.reverse_bits() >> (32 - width), width);
    }

    /// A literal/length symbol's fixed code (RFC 1951 §3.2.6).
    fn code(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.huffman(0x30 + symbol, 8),
            144..=255 => self.huffman(0x190 + symbol - 144, 9),
            256..=279 => self.huffman(symbol - 256, 7),
            _ => self.huffman(0xC0 + symbol - 280, 8),
        }
    }

    fn literal(&mut self, byte: u8) {
        self.code(u32::from(byte));
    }

    fn length(&mut self, len: usize) {
        let i = LEN_BASE.partition_point(|&base| usize::from(base) <= len) - 1;
        self.code(257 + i as u32);
        let extra = (len - usize::from(LEN_BASE[i])) as u32;
        self.put(extra, u32::from(LEN_EXTRA[i]));
    }

    fn distance(&mut self, dist: usize) {
        let i = DIST_BASE.partition_point(|&base| usize::from(base) <= dist) - 1;
        self.huffman(i as u32, 5);
        let extra = (dist - usize::from(DIST_BASE[i])) as u32;
        self.put(extra, u32::from(DIST_EXTRA[i]));
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Decompress, FlushDecompress};

    use super::super::TAIL;
    use super::*;

    fn inflate(inflater: &mut Decompress, data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        let before = inflater.total_in();
        inflater
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("valid deflate");
        assert_eq!(inflater.total_in() - before, input.len() as u64);
        out
    }

    /// Chat-like lines: a JSON envelope around short, varied texts.
    fn chat(i: usize) -> Vec<u8> {
        let words = [
            "ok",
            "see you",
            "at nine",
            "the station",
            "bring",
            "tickets",
            "lol",
        ];
        let text: Vec<&str> = (0..(i % 7 + 3))
            .map(|k| words[(i * 7 + k * 3) % 7])
            .collect();
        format!(
            r#"{{"type":"message","room":"team-{}","offset":{},"from":"user-{}","data":{{"text":"{}"}},"ts":17331{:08}}}"#,
            i % 3,
            1000 + i,
            i % 10,
            text.join(" "),
            i * 7919
        )
        .into_bytes()
    }

    #[test]
    fn every_message_inflates_through_one_decompressor_with_the_announced_window() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for bits in [9u8, 10, 15] {
            let mut encoder = ContextEncoder::new(bits, 1);
            let mut client = Decompress::new_with_window_bits(false, bits);
            for i in 0..400 {
                // Chat lines, random bytes, long runs, and lengths past the window and 258.
                let message = match i % 5 {
                    0 | 1 => chat(i),
                    2 => (0..rng.random_range(0..3000))
                        .map(|_| rng.random())
                        .collect(),
                    3 => vec![b'a' + (i % 26) as u8; rng.random_range(0..70_000)],
                    _ => chat(i).repeat(rng.random_range(1..40)),
                };
                let wire = encoder.compress(&message);
                assert_eq!(
                    inflate(&mut client, &wire),
                    message,
                    "bits {bits}, message {i}"
                );
                assert!(encoder.held() <= 1 << bits);
            }
        }
    }

    #[test]
    fn chat_lines_compress_about_as_well_as_zlib_with_context() {
        let mut ours = ContextEncoder::new(10, 1);
        let mut zlib = Compress::new_with_window_bits(flate2::Compression::new(1), false, 10);
        let (mut raw, mut small, mut theirs) = (0, 0, 0);
        for i in 0..300 {
            let line = chat(i);
            raw += line.len();
            small += ours.compress(&line).len();
            theirs += super::super::compress_flush(&mut zlib, &line)
                .unwrap()
                .len();
        }
        // Measured: 300 lines of 120-170 bytes.
        assert!(raw > small * 3, "{raw} bytes to {small}");
        assert!(small * 10 < theirs * 12, "ours {small}, zlib {theirs}");
    }

    /// Sizes and speed beside zlib-rs with context, for docs/operations.md:
    /// `cargo test --release --lib context_beside_zlib -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, read by hand"]
    fn context_beside_zlib() {
        use std::time::Instant;
        let lines: Vec<Vec<u8>> = (0..2000).map(chat).collect();
        let big: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                let items: Vec<String> = (0..20)
                    .map(|k| format!(r#"{{"id":{},"name":"item-{}","price":{}.{:02},"tags":["a","b{}"]}}"#, i * 20 + k, k, k * 3, i % 100, k % 4))
                    .collect();
                format!(r#"{{"type":"message","room":"shop","offset":{i},"from":"feed","data":[{}],"ts":1733100000{i:03}}}"#, items.join(",")).into_bytes()
            })
            .collect();
        for (name, set) in [("chat", &lines), ("1.3 KB JSON", &big)] {
            let raw: usize = set.iter().map(Vec::len).sum();
            let mut ours = ContextEncoder::new(10, 1);
            let t = Instant::now();
            let small: usize = set.iter().map(|m| ours.compress(m).len()).sum();
            let ours_t = t.elapsed();
            let mut zlib =
                flate2::Compress::new_with_window_bits(flate2::Compression::new(1), false, 10);
            let t = Instant::now();
            let theirs: usize = set
                .iter()
                .map(|m| super::super::compress_flush(&mut zlib, m).unwrap().len())
                .sum();
            let zlib_t = t.elapsed();
            let alone: usize = set
                .iter()
                .map(|m| super::super::compress_alone(m, 1).map_or(m.len(), |c| c.len()))
                .sum();
            println!(
                "{name}: {} messages, {raw} bytes; context ours {small} ({:.2}x, {:?}), zlib-rs window 10 {theirs} ({:.2}x, {:?}); alone {alone} ({:.2}x)",
                set.len(),
                raw as f64 / small as f64,
                ours_t,
                raw as f64 / theirs as f64,
                zlib_t,
                raw as f64 / alone as f64
            );
        }
    }
}
