//! Hash tables keep the capacity of their largest size. After a crowd of connections has left,
//! the node's tables keyed by user, session or room would stay sized for the crowd, and their
//! large allocations would keep malloc from handing those pages back; the periodic sweeps
//! shrink them once they are mostly empty.

use std::hash::{BuildHasher, Hash};

use dashmap::DashMap;

/// Below this many slots a table is left alone: shrinking it would save too little to matter.
const SMALL: usize = 1024;

/// Shrinks `map` to its contents when it uses less than a quarter of its capacity. Takes each
/// shard's write lock in turn, so call it from a periodic sweep, not per request.
pub fn if_sparse<K: Eq + Hash, V, S: BuildHasher + Clone>(map: &DashMap<K, V, S>) {
    let capacity = map.capacity();
    if capacity > SMALL && map.len() * 4 < capacity {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_empty_table_shrinks_and_a_full_or_small_one_does_not() {
        let map: DashMap<u32, u32> = DashMap::new();
        for i in 0..20_000 {
            map.insert(i, i);
        }
        let full = map.capacity();
        if_sparse(&map);
        assert_eq!(map.capacity(), full, "a full table keeps its capacity");

        map.retain(|&k, _| k < 100);
        if_sparse(&map);
        assert!(map.capacity() * 16 < full, "{} of {full}", map.capacity());
        assert_eq!(map.len(), 100, "shrinking keeps every entry");
        assert!((0..100).all(|k| map.get(&k).is_some_and(|v| *v == k)));

        let small: DashMap<u32, u32> = DashMap::new();
        for i in 0..200 {
            small.insert(i, i);
        }
        small.retain(|&k, _| k < 1);
        let before = small.capacity();
        if_sparse(&small);
        assert_eq!(small.capacity(), before, "a small table is left alone");
    }
}
