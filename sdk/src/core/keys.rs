//! Request keys (protocol v5, §9.1 and §9.3 of `specs/protocol.md`): the
//! 16-byte identity that makes a write exactly-once across reconnects.
//!
//! The core never reads a clock or a random source: the driver makes a key
//! from its runtime ([`RequestKey::new`] with the Unix time and 10 random
//! bytes) when a request is submitted, and the core keeps it with the
//! request for every re-send. Simulation tests make keys from a seeded
//! generator ([`KeyGen`]).

/// Length of a request key on the wire.
pub const REQUEST_KEY_LEN: usize = 16;
/// How many leading bytes hold the big-endian Unix time in milliseconds.
pub const REQUEST_KEY_TIME_BYTES: usize = 6;
/// How many trailing bytes are random.
pub const REQUEST_KEY_RANDOM_BYTES: usize = REQUEST_KEY_LEN - REQUEST_KEY_TIME_BYTES;

/// A v5 request key: bytes 0–5 the big-endian Unix time in milliseconds when
/// the key was made, bytes 6–15 random. One key per logical write, reused for
/// every retry of that write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey([u8; REQUEST_KEY_LEN]);

impl RequestKey {
    /// A key made at `unix_ms` (only its low 48 bits fit; that lasts until
    /// the year 10889) with `random` as its last ten bytes.
    pub fn new(unix_ms: u64, random: [u8; REQUEST_KEY_RANDOM_BYTES]) -> Self {
        let mut b = [0u8; REQUEST_KEY_LEN];
        b[..REQUEST_KEY_TIME_BYTES].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        b[REQUEST_KEY_TIME_BYTES..].copy_from_slice(&random);
        RequestKey(b)
    }

    /// The key as it travels.
    pub fn as_bytes(&self) -> &[u8; REQUEST_KEY_LEN] {
        &self.0
    }

    /// The Unix time in milliseconds the key was made at (its first six bytes).
    pub fn unix_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..REQUEST_KEY_TIME_BYTES]);
        u64::from_be_bytes(t)
    }

    /// The wire form (`RequestKey` is `data` in the schema).
    pub fn to_wire(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl std::fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestKey(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A deterministic key maker for tests and simulations: splitmix64 over a
/// seed, with the time given by the caller. Production keys come from the
/// runtime's random source instead (see `Runtime::fill_random`).
#[derive(Debug, Clone)]
pub struct KeyGen {
    /// The generator's state; each key advances it twice.
    state: u64,
}

impl KeyGen {
    pub fn new(seed: u64) -> Self {
        KeyGen { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A key made at `unix_ms`.
    pub fn key(&mut self, unix_ms: u64) -> RequestKey {
        let mut random = [0u8; REQUEST_KEY_RANDOM_BYTES];
        random[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&self.next_u64().to_le_bytes()[..2]);
        RequestKey::new(unix_ms, random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_big_endian_time_then_random() {
        let k = RequestKey::new(0x0102_0304_0506, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(k.as_bytes(), &[1, 2, 3, 4, 5, 6, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(k.unix_ms(), 0x0102_0304_0506);
        assert_eq!(k.to_wire().len(), REQUEST_KEY_LEN);
        // 2026-12-02 in ms fits the six bytes unchanged.
        let now = 1_796_212_800_000;
        assert_eq!(RequestKey::new(now, [0; 10]).unix_ms(), now);
    }

    #[test]
    fn seeded_generator_is_deterministic_and_keys_differ() {
        let mut a = KeyGen::new(42);
        let mut b = KeyGen::new(42);
        let ka: Vec<_> = (0..100).map(|_| a.key(5)).collect();
        let kb: Vec<_> = (0..100).map(|_| b.key(5)).collect();
        assert_eq!(ka, kb);
        let distinct: std::collections::HashSet<_> = ka.iter().collect();
        assert_eq!(distinct.len(), 100, "keys made in the same millisecond still differ");
    }
}
