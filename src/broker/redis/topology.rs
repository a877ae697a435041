//! Which master owns which hash slot, as `CLUSTER SLOTS` reports it, and the slot of a key.

use std::collections::BTreeSet;
use std::sync::Arc;

use redis::Value;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first `{` and the
/// next `}`, when not empty) or of the whole key, modulo 16384, as Redis computes it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Slot ranges and their masters (`host:port`), sorted by first slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Topology {
    ranges: Vec<(u16, u16, Arc<str>)>,
}

impl Topology {
    /// Reads a `CLUSTER SLOTS` reply. A master announced without a host (`""` or `?`) is on
    /// the host the reply came from, `asked`. `None` when the reply has no usable range.
    pub fn parse(reply: &Value, asked: &str) -> Option<Self> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                continue;
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (int(fields.first()), int(fields.get(1)), fields.get(2))
            else {
                continue;
            };
            let (Some(host), Some(port)) = (text(master.first()), int(master.get(1))) else {
                continue;
            };
            let host = if host.is_empty() || host == "?" {
                asked
            } else {
                &host
            };
            ranges.push((
                start as u16,
                end as u16,
                Arc::from(format!("{host}:{port}")),
            ));
        }
        ranges.sort_unstable_by_key(|r| r.0);
        (!ranges.is_empty()).then_some(Self { ranges })
    }

    /// How many slots have a master: a node that has not heard of every assignment yet (a
    /// forming cluster) answers with fewer.
    pub fn coverage(&self) -> u32 {
        self.ranges
            .iter()
            .map(|(start, end, _)| u32::from(*end) - u32::from(*start) + 1)
            .sum()
    }

    pub fn complete(&self) -> bool {
        self.coverage() >= u32::from(SLOTS)
    }

    /// The master serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&Arc<str>> {
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        let (start, end, addr) = self.ranges.get(i.checked_sub(1)?)?;
        (*start..=*end).contains(&slot).then_some(addr)
    }

    pub fn masters(&self) -> BTreeSet<Arc<str>> {
        self.ranges.iter().map(|r| r.2.clone()).collect()
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT and the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // An empty first tag does not count: the whole key is hashed.
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
        assert_eq!(key_slot("p:meta:{room}"), key_slot("p:room:{room}"));
    }

    #[test]
    fn owners_by_range() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let range = |a, b, host: &str, port| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            ])
        };
        let reply = Value::Array(vec![
            range(5461, 10922, "127.0.0.1", 7001),
            range(0, 5460, "", 7000),
        ]);
        let topology = Topology::parse(&reply, "10.0.0.1").unwrap();
        assert_eq!(topology.owner(0).unwrap().as_ref(), "10.0.0.1:7000");
        assert_eq!(topology.owner(5461).unwrap().as_ref(), "127.0.0.1:7001");
        assert_eq!(topology.owner(10922).unwrap().as_ref(), "127.0.0.1:7001");
        assert_eq!(topology.owner(10923), None);
        assert_eq!(topology.masters().len(), 2);
        assert_eq!(topology.coverage(), 10923);
        assert!(!topology.complete());
    }
}
