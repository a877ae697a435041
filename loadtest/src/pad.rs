//! The padding in each message's `data` (`pad` in a scenario): `x` repeated, the default, which
//! sets a size and nothing else; or content that compresses like real traffic, for measuring
//! permessage-deflate: `words`, a chat line's text (words drawn at random from a few hundred
//! common ones), and `json`, an array of chat-like records (ids, names, text, timestamps), as an
//! application's bigger payloads are. Each message takes a different slice of a text made once
//! per worker, so no two messages are alike and nothing is allocated per message. No I/O.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::wire::PadText;

/// What `pad` fills messages with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadKind {
    #[default]
    X,
    Words,
    Json,
}

/// Texts a worker's messages take their padding from.
#[derive(Debug, Clone)]
pub struct Pad {
    kind: PadKind,
    bytes: usize,
    text: String,
    /// Where each record of a `json` text starts.
    starts: Vec<usize>,
}

/// Each kind's text is this many times the message size (and at least `MIN_TEXT`), so slices
/// at random offsets rarely repeat.
const TEXT_FACTOR: usize = 64;
const MIN_TEXT: usize = 64 * 1024;

const WORDS: &[&str] = &[
    "the",
    "be",
    "to",
    "of",
    "and",
    "a",
    "in",
    "that",
    "have",
    "I",
    "it",
    "for",
    "not",
    "on",
    "with",
    "he",
    "as",
    "you",
    "do",
    "at",
    "this",
    "but",
    "his",
    "by",
    "from",
    "they",
    "we",
    "say",
    "her",
    "she",
    "or",
    "an",
    "will",
    "my",
    "one",
    "all",
    "would",
    "there",
    "their",
    "what",
    "so",
    "up",
    "out",
    "if",
    "about",
    "who",
    "get",
    "which",
    "go",
    "me",
    "when",
    "make",
    "can",
    "like",
    "time",
    "no",
    "just",
    "him",
    "know",
    "take",
    "people",
    "into",
    "year",
    "your",
    "good",
    "some",
    "could",
    "them",
    "see",
    "other",
    "than",
    "then",
    "now",
    "look",
    "only",
    "come",
    "its",
    "over",
    "think",
    "also",
    "back",
    "after",
    "use",
    "two",
    "how",
    "our",
    "work",
    "first",
    "well",
    "way",
    "even",
    "new",
    "want",
    "because",
    "any",
    "these",
    "give",
    "day",
    "most",
    "us",
    "lol",
    "ok",
    "yes",
    "thanks",
    "meeting",
    "tomorrow",
    "tonight",
    "lunch",
    "deploy",
    "build",
    "release",
    "ticket",
    "review",
    "merged",
    "broken",
    "fixed",
    "coffee",
    "weekend",
    "great",
    "sure",
    "maybe",
    "later",
    "sorry",
    "again",
    "really",
    "here",
    "done",
    "check",
    "link",
    "call",
    "late",
    "soon",
    "where",
    "why",
    "home",
    "team",
    "game",
    "photo",
    "sounds",
    "perfect",
    "awesome",
    "agree",
    "idea",
    "plan",
    "next",
    "week",
    "friday",
    "monday",
    "morning",
    "night",
    "today",
    "yesterday",
    "still",
    "waiting",
    "ready",
    "working",
    "thing",
    "question",
    "answer",
    "problem",
    "server",
    "client",
    "update",
    "version",
    "test",
    "love",
    "haha",
    "nice",
    "cool",
    "wow",
    "please",
    "help",
    "need",
    "found",
    "send",
    "file",
];

impl Pad {
    /// Texts for messages of about `bytes` bytes of padding, drawn with `seed`.
    pub fn new(kind: PadKind, bytes: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
        let want = (bytes * TEXT_FACTOR).max(MIN_TEXT);
        let (text, starts) = match kind {
            PadKind::X => ("x".repeat(bytes), Vec::new()),
            PadKind::Words => (words(&mut rng, want, " "), Vec::new()),
            PadKind::Json => records(&mut rng, want.max(bytes * 2)),
        };
        Self {
            kind,
            bytes,
            text,
            starts,
        }
    }

    /// The padding of one message, chosen by `draw` (any number: a message's random draw).
    pub fn pick(&self, draw: u64) -> PadText<'_> {
        match self.kind {
            PadKind::X => PadText {
                text: &self.text,
                items: false,
            },
            PadKind::Words => {
                let start = (draw % (self.text.len() - self.bytes) as u64) as usize;
                PadText {
                    text: &self.text[start..start + self.bytes],
                    items: false,
                }
            }
            PadKind::Json => {
                // Whole records from a random one until `bytes` are covered.
                let last = self.text.len() - self.bytes;
                let usable = self.starts.partition_point(|&s| s <= last).max(1);
                let start = self.starts[(draw % usable as u64) as usize];
                let end_at = start + self.bytes.max(1);
                let end = self
                    .starts
                    .iter()
                    .find(|&&s| s > end_at)
                    .map_or(self.text.len(), |&s| s - 1);
                PadText {
                    text: &self.text[start..end],
                    items: true,
                }
            }
        }
    }
}

/// Random words separated by `sep`, at least `len` bytes.
fn words(rng: &mut Rng, len: usize, sep: &str) -> String {
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
    }
    out
}

/// Chat-like JSON records separated by commas, at least `len` bytes, and where each starts.
fn records(rng: &mut Rng, len: usize) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(len + 256);
    let mut starts = Vec::new();
    let mut id = 1_000 + rng.next_u64() % 1_000_000;
    while out.len() < len {
        if !out.is_empty() {
            out.push(',');
        }
        starts.push(out.len());
        id += 1 + rng.next_u64() % 5;
        let n = 4 + (rng.next_u64() % 12) as usize;
        let text = words(rng, n * 5, " ");
        let user = rng.next_u64() % 500;
        let ts = 1_733_400_000_000 + id * 137;
        let likes = rng.next_u64() % 4;
        out.push_str(&format!(
            r#"{{"id":{id},"user":"user_{user}","name":"User {user}","text":"{text}","ts":{ts},"reactions":{{"like":{likes}}},"edited":false}}"#
        ));
    }
    (out, starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gives_its_size_and_valid_json() {
        let x = Pad::new(PadKind::X, 100, 1);
        assert_eq!(x.pick(7).text, "x".repeat(100));
        let w = Pad::new(PadKind::Words, 200, 1);
        let (a, b) = (w.pick(1), w.pick(999_999));
        assert_eq!((a.text.len(), b.text.len()), (200, 200));
        assert_ne!(a, b);
        assert!(!a.items && a.text.bytes().all(|c| c.is_ascii_alphabetic() || c == b' '));
        let j = Pad::new(PadKind::Json, 2048, 1);
        for draw in [0, 5, 12345, u64::MAX] {
            let p = j.pick(draw);
            assert!(p.items && p.text.len() >= 2048 && p.text.len() < 2048 + 300);
            let v: serde_json::Value = serde_json::from_str(&format!("[{}]", p.text)).unwrap();
            assert!(v.as_array().unwrap().len() > 5);
        }
    }
}
