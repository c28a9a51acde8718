//! A bounded BARE codec: the primitives the generated types are written with.
//!
//! Decoding is strict and defensive: every length is checked against the bytes
//! that remain before anything is allocated, the memory a decode may allocate
//! is charged against a budget, `bool` and `optional` tags must be 0 or 1,
//! `uint`s must be minimal LEB128, and an error carries the byte offset and the
//! field path where decoding failed. It never panics, whatever the input.

use std::collections::BTreeMap;
use std::fmt;

/// A type with a BARE encoding.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);

    /// Encodes into a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A type that can be decoded from BARE bytes.
pub trait Decode: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Why decoding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended before a value was complete.
    UnexpectedEnd {
        needed: usize,
        remaining: usize,
    },
    /// A length prefix promises more elements or bytes than the input holds.
    LengthExceedsInput {
        len: u64,
        remaining: usize,
    },
    /// Decoding would allocate more than the configured budget.
    BudgetExceeded {
        budget: usize,
    },
    /// The frame is larger than the configured maximum.
    FrameTooLarge {
        len: usize,
        max: usize,
    },
    /// Bytes remain after the top-level message.
    TrailingBytes {
        count: usize,
    },
    InvalidUtf8,
    /// A `bool` byte other than 0 or 1.
    InvalidBool(u8),
    /// An `optional` tag other than 0 or 1.
    InvalidOptionalTag(u8),
    /// A `uint` longer than 10 bytes or larger than 64 bits.
    UintOverflow,
    /// A `uint` with redundant trailing zero groups.
    NonCanonicalUint,
    UnknownUnionTag {
        ty: &'static str,
        tag: u64,
    },
    UnknownEnumValue {
        ty: &'static str,
        value: u64,
    },
    DuplicateMapKey,
    /// A number does not fit the field it is read into.
    ValueOutOfRange,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd { needed, remaining } => {
                write!(f, "input ends early: needed {needed} more byte(s), {remaining} left")
            }
            Self::LengthExceedsInput { len, remaining } => {
                write!(f, "length prefix {len} exceeds the {remaining} byte(s) left")
            }
            Self::BudgetExceeded { budget } => {
                write!(f, "decoding would allocate more than the {budget}-byte budget")
            }
            Self::FrameTooLarge { len, max } => write!(f, "frame of {len} bytes exceeds the maximum of {max}"),
            Self::TrailingBytes { count } => write!(f, "{count} trailing byte(s) after the message"),
            Self::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            Self::InvalidBool(b) => write!(f, "bool byte must be 0 or 1, found {b}"),
            Self::InvalidOptionalTag(b) => write!(f, "optional tag must be 0 or 1, found {b}"),
            Self::UintOverflow => write!(f, "uint does not fit in 64 bits"),
            Self::NonCanonicalUint => write!(f, "uint is not minimally encoded"),
            Self::UnknownUnionTag { ty, tag } => write!(f, "unknown tag {tag} for union {ty}"),
            Self::UnknownEnumValue { ty, value } => write!(f, "unknown value {value} for enum {ty}"),
            Self::DuplicateMapKey => write!(f, "duplicate map key"),
            Self::ValueOutOfRange => write!(f, "value out of range"),
        }
    }
}

/// Where and why decoding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the frame where the failing value starts.
    pub offset: usize,
    /// Field path from the top-level message, outermost first
    /// (e.g. `["ToEngineSqliteExecute", "request", "params", "[3]"]`).
    pub path: Vec<String>,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The path as one string, e.g. `ToEngineSqliteExecute.request.params[3]`.
    pub fn path_string(&self) -> String {
        let mut s = String::new();
        for p in &self.path {
            if !s.is_empty() && !p.starts_with('[') {
                s.push('.');
            }
            s.push_str(p);
        }
        s
    }
}

impl DecodeError {
    /// This error, recorded as having happened inside field or member `name`.
    #[cold]
    #[inline(never)]
    fn inside(mut self, name: &'static str) -> Self {
        self.path.insert(0, name.to_string());
        self
    }

    /// This error, recorded as having happened in list element `i`.
    #[cold]
    #[inline(never)]
    fn inside_index(mut self, i: usize) -> Self {
        self.path.insert(0, format!("[{i}]"));
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at byte {}: {}", self.offset, self.kind)
        } else {
            write!(f, "at byte {} ({}): {}", self.offset, self.path_string(), self.kind)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads BARE values from a byte slice, charging allocations to a budget.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Bytes of heap the rest of this decode may still allocate. Charged before
    /// each allocation, so a lying length prefix fails instead of allocating.
    budget_left: usize,
    budget: usize,
    /// The protocol version the frame is read at (see [`Reader::version`]).
    version: u16,
}

impl<'a> Reader<'a> {
    /// A reader that may allocate at most `budget` bytes in total, accepting
    /// every value the decoded types have.
    pub fn new(bytes: &'a [u8], budget: usize) -> Self {
        Self { bytes, pos: 0, budget_left: budget, budget, version: u16::MAX }
    }

    /// The protocol version the frame is read at. A version that only appended
    /// enum values to the one before it is read with the newer version's types
    /// (`build.rs`, `GENERATED_CONVERSIONS`): their decoders refuse a value
    /// appended after this version, exactly as the older types would. Frames
    /// decoded outside the versioned API read at `u16::MAX` (every value).
    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, path: Vec::new(), kind }
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        self.error_at(self.pos, kind)
    }

    /// Runs `f` and, on error, records that it happened inside `name`.
    ///
    /// Generated decoders call this for every field, so it is instantiated
    /// for hundreds of closures: the error path is one shared, non-generic
    /// function ([`DecodeError::inside`]) instead of code at every field.
    #[inline]
    pub fn within<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        match f(self) {
            Ok(v) => Ok(v),
            Err(e) => Err(e.inside(name)),
        }
    }

    /// Runs `f` and, on error, records that it happened in list element `i`.
    #[inline]
    pub fn within_index<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        match f(self) {
            Ok(v) => Ok(v),
            Err(e) => Err(e.inside_index(i)),
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.budget_left.checked_sub(bytes) {
            Some(left) => {
                self.budget_left = left;
                Ok(())
            }
            None => Err(self.error(DecodeErrorKind::BudgetExceeded { budget: self.budget })),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(DecodeErrorKind::UnexpectedEnd { needed: n, remaining: self.remaining() }));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn read_uint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.take(1).map_err(|mut e| {
                e.offset = start;
                e
            })?[0];
            if i == 9 && b > 1 {
                return Err(self.error_at(start, DecodeErrorKind::UintOverflow));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(self.error_at(start, DecodeErrorKind::NonCanonicalUint));
                }
                return Ok(value);
            }
        }
        Err(self.error_at(start, DecodeErrorKind::UintOverflow))
    }

    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn read_u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn read_i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_le_bytes(self.array()?))
    }
    pub fn read_i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// All 64 bits are kept: NaN payloads and the sign of zero survive.
    pub fn read_f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(u64::from_le_bytes(self.array()?)))
    }
    pub fn read_f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_bits(u32::from_le_bytes(self.array()?)))
    }
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.read_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error_at(at, DecodeErrorKind::InvalidBool(b))),
        }
    }
    pub fn read_optional_tag(&mut self) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.read_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error_at(at, DecodeErrorKind::InvalidOptionalTag(b))),
        }
    }

    /// Reads a byte length and checks it against the input left and the budget.
    fn read_byte_len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.read_uint()?;
        if len > self.remaining() as u64 {
            return Err(self.error_at(at, DecodeErrorKind::LengthExceedsInput { len, remaining: self.remaining() }));
        }
        let len = len as usize;
        self.charge(len).map_err(|mut e| {
            e.offset = at;
            e
        })?;
        Ok(len)
    }

    pub fn read_data(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.read_byte_len()?;
        Ok(self.take(len)?.to_vec())
    }

    pub fn read_str(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        let len = self.read_byte_len()?;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.error_at(at, DecodeErrorKind::InvalidUtf8)),
        }
    }

    /// Reads an element count for a list or map of `T`. Every element takes at
    /// least one byte on the wire, so a count beyond the bytes left is a lie;
    /// the memory the elements will occupy is charged to the budget up front.
    pub fn read_len<T>(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.read_uint()?;
        if n > self.remaining() as u64 {
            return Err(self.error_at(at, DecodeErrorKind::LengthExceedsInput { len: n, remaining: self.remaining() }));
        }
        let n = n as usize;
        self.charge(n.saturating_mul(std::mem::size_of::<T>().max(1))).map_err(|mut e| {
            e.offset = at;
            e
        })?;
        Ok(n)
    }

    /// Like [`Reader::read_len`] for a map: B-tree nodes cost more than the
    /// entries they hold, so each entry is charged twice its size.
    pub fn read_map_len<T>(&mut self) -> Result<usize, DecodeError> {
        self.read_len::<(T, T)>()
    }

    pub fn insert_unique<V>(&self, map: &mut BTreeMap<String, V>, k: String, v: V) -> Result<(), DecodeError> {
        if map.contains_key(&k) {
            return Err(self.error(DecodeErrorKind::DuplicateMapKey));
        }
        map.insert(k, v);
        Ok(())
    }
}

pub fn write_uint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn write_len(out: &mut Vec<u8>, n: usize) {
    write_uint(out, n as u64);
}
pub fn write_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub fn write_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_i8(out: &mut Vec<u8>, v: i8) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}
/// IEEE 754 binary64, little-endian, bit for bit.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(v as u8);
}
pub fn write_str(out: &mut Vec<u8>, v: &str) {
    write_data(out, v.as_bytes());
}
pub fn write_data(out: &mut Vec<u8>, v: &[u8]) {
    write_len(out, v.len());
    out.extend_from_slice(v);
}

/// Decodes one complete top-level value: the frame must fit `max_frame_bytes`,
/// allocations stay within `budget` bytes, and no bytes may trail.
pub fn decode_frame<T: Decode>(bytes: &[u8], max_frame_bytes: usize, budget: usize) -> Result<T, DecodeError> {
    decode_frame_at(bytes, u16::MAX, max_frame_bytes, budget)
}

/// [`decode_frame`] at protocol `version` (see [`Reader::version`]).
pub fn decode_frame_at<T: Decode>(
    bytes: &[u8],
    version: u16,
    max_frame_bytes: usize,
    budget: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_frame_bytes {
        return Err(DecodeError {
            offset: 0,
            path: Vec::new(),
            kind: DecodeErrorKind::FrameTooLarge { len: bytes.len(), max: max_frame_bytes },
        });
    }
    let mut r = Reader::new(bytes, budget);
    r.version = version;
    let value = T::decode(&mut r)?;
    if r.remaining() > 0 {
        return Err(r.error(DecodeErrorKind::TrailingBytes { count: r.remaining() }));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_roundtrip_and_canonical() {
        for v in [0u64, 1, 127, 128, 300, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_uint(&mut out, v);
            let mut r = Reader::new(&out, 0);
            assert_eq!(r.read_uint().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        let mut r = Reader::new(&[0x80, 0x00], 0);
        assert_eq!(r.read_uint().unwrap_err().kind, DecodeErrorKind::NonCanonicalUint);
        let eleven = [0xffu8; 11];
        let mut r = Reader::new(&eleven, 0);
        assert_eq!(r.read_uint().unwrap_err().kind, DecodeErrorKind::UintOverflow);
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], 0);
        assert_eq!(r.read_uint().unwrap_err().kind, DecodeErrorKind::UintOverflow);
    }

    #[test]
    fn lying_lengths_fail_before_allocating() {
        // A string that claims 2^62 bytes.
        let mut bytes = Vec::new();
        write_uint(&mut bytes, 1 << 62);
        let mut r = Reader::new(&bytes, 1 << 20);
        assert!(matches!(r.read_str().unwrap_err().kind, DecodeErrorKind::LengthExceedsInput { .. }));
        // A list that fits the input but not the budget.
        let mut bytes = Vec::new();
        write_uint(&mut bytes, 100);
        bytes.extend_from_slice(&[0; 100]);
        let mut r = Reader::new(&bytes, 64);
        assert_eq!(r.read_len::<u64>().unwrap_err().kind, DecodeErrorKind::BudgetExceeded { budget: 64 });
    }

    #[test]
    fn floats_keep_every_bit() {
        for v in [0.0f64, -0.0, f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, 1.5] {
            let mut out = Vec::new();
            write_f64(&mut out, v);
            assert_eq!(out, v.to_bits().to_le_bytes());
            let mut r = Reader::new(&out, 0);
            assert_eq!(r.read_f64().unwrap().to_bits(), v.to_bits());
        }
    }
}
