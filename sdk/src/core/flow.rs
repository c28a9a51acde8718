//! Credit-based flow control of v5 result streams (§9.6 of
//! `specs/protocol.md`), on the client side.
//!
//! The client grants the engine a window of row bytes when it opens a stream
//! (`creditBytes`). Rows arrive and are buffered until the application takes
//! them; bytes the application has taken are returned to the engine as more
//! credit, in batches of at least half the window so a fast consumer does not
//! send a credit message per row. Credit is only ever returned for bytes the
//! application consumed, so what the engine may still send plus what the
//! client buffers never exceeds the window (plus the one row the engine may
//! overrun by): memory stays bounded however slow the consumer is.

use envoy_protocol::Value;

/// `size_of::<Vec<Value>>()` on the engine's 64-bit targets: what a row's
/// header counts, on every client target (wasm32's own size is half of it).
const ROW_HEADER_BYTES: usize = 24;
/// `size_of::<Value>()` on the engine's 64-bit targets: what each value
/// counts besides its TEXT/BLOB bytes, on every client target.
const VALUE_BYTES: usize = 32;

/// Bytes a row counts against a stream's credit: its decoded size, counted
/// exactly as the engine counts it (the row's `Vec<Value>` header, plus for
/// each value its in-memory size and its TEXT/BLOB bytes). Client and engine
/// must agree: credit returned for fewer bytes than the engine spent would
/// starve the stream, for more would let the engine run ahead of the window.
/// The sizes are the engine's (64-bit) ones as constants, not this target's
/// `size_of`: on wasm32 those are smaller, and a client counting them returned
/// less credit than the engine spent until the stream starved (STREAM_EXPIRED).
pub fn row_bytes(row: &[Value]) -> u64 {
    let values: usize = row
        .iter()
        .map(|v| {
            let heap = match v {
                Value::Text(s) => s.len(),
                Value::Blob(b) => b.len(),
                Value::Null | Value::Integer(_) | Value::Float(_) => 0,
            };
            VALUE_BYTES + heap
        })
        .sum();
    (ROW_HEADER_BYTES + values) as u64
}

/// The credit state of one open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFlow {
    /// The credit granted at open: the most row bytes granted and not yet
    /// consumed at any time.
    pub window: u64,
    /// Every byte of credit granted so far (the open's plus each credit message).
    pub granted: u64,
    /// Row bytes received so far.
    pub received: u64,
    /// Row bytes the application has consumed so far.
    pub consumed: u64,
    /// Consumed bytes not yet returned to the engine as credit.
    pub unreturned: u64,
    /// The sequence the next message of the stream must carry.
    pub next_sequence: u32,
    /// The application dropped the stream: a cancel was sent, and rows that
    /// still arrive are dropped instead of delivered.
    pub cancelled: bool,
}

impl StreamFlow {
    /// A stream opened with `window` bytes of credit.
    pub fn new(window: u32) -> Self {
        StreamFlow {
            window: u64::from(window),
            granted: u64::from(window),
            received: 0,
            consumed: 0,
            unreturned: 0,
            next_sequence: 0,
            cancelled: false,
        }
    }

    /// A chunk of `bytes` arrived.
    pub fn received(&mut self, bytes: u64) {
        self.received += bytes;
    }

    /// The application took `bytes`; returns the credit to grant now, if any.
    pub fn consumed(&mut self, bytes: u64) -> Option<u32> {
        // Never count more than arrived (a confused caller must not inflate credit).
        let bytes = bytes.min(self.received.saturating_sub(self.consumed));
        self.consumed += bytes;
        self.unreturned += bytes;
        if self.cancelled || self.unreturned == 0 || self.unreturned < self.window.div_ceil(2) {
            return None;
        }
        let grant = self.unreturned.min(u64::from(u32::MAX));
        self.unreturned -= grant;
        self.granted += grant;
        Some(grant as u32)
    }

    /// Credit granted and not yet consumed: what the engine may still send
    /// plus what the client holds. Never more than the window.
    pub fn outstanding(&self) -> u64 {
        self.granted - self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn row_bytes_constants_are_the_engines_sizes() {
        // The engine (64-bit only) counts with size_of; the constants must stay equal to it.
        assert_eq!(ROW_HEADER_BYTES, std::mem::size_of::<Vec<Value>>());
        assert_eq!(VALUE_BYTES, std::mem::size_of::<Value>());
    }

    #[test]
    fn row_bytes_counts_decoded_size() {
        let v = std::mem::size_of::<Value>() as u64;
        let row = std::mem::size_of::<Vec<Value>>() as u64;
        assert_eq!(row_bytes(&[]), row);
        assert_eq!(row_bytes(&[Value::Null, Value::Integer(1)]), row + 2 * v);
        assert_eq!(row_bytes(&[Value::Text("abc".into()), Value::Blob(vec![0; 10])]), row + 2 * v + 13);
    }

    #[test]
    fn credit_is_returned_in_half_windows_and_never_exceeds_the_window() {
        let mut f = StreamFlow::new(100);
        f.received(60);
        assert_eq!(f.consumed(40), None, "less than half the window");
        assert_eq!(f.consumed(20), Some(60));
        assert_eq!(f.outstanding(), 100);
        // Consuming more than arrived is clamped.
        assert_eq!(f.consumed(1_000), None);
        assert_eq!(f.consumed, 60);
        f.cancelled = true;
        f.received(100);
        assert_eq!(f.consumed(100), None, "no credit after cancel");
    }
}
