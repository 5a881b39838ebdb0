//! Deterministic hashing, small random streams, invertible id codecs and permutations.
//!
//! Everything the simulator generates is a pure function of a tenant seed and an index, so these
//! primitives are hand-written (SplitMix64 and a Feistel network) and never change between crate
//! versions: the same seed gives the same bytes forever.

use uuid::Uuid;

/// SplitMix64's finalizer: a fast, well-mixed 64-bit bijection.
#[must_use]
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a seed and a list of parts into one 64-bit value.
#[must_use]
pub fn hash(seed: u64, parts: &[u64]) -> u64 {
    let mut acc = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    for p in parts {
        acc = mix(acc
            ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(0x632b_e59b_d9b4_e019));
    }
    acc
}

/// Hashes a string into a 64-bit value (FNV-1a followed by [`mix`]).
#[must_use]
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// A uniform float in `[0, 1)` from 64 random bits.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A small deterministic random stream (SplitMix64).
#[derive(Debug, Clone)]
pub struct Stream(u64);

impl Stream {
    /// A stream seeded by hashing `seed` with `parts`.
    #[must_use]
    pub fn new(seed: u64, parts: &[u64]) -> Self {
        Self(hash(seed, parts))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A uniform integer in `[0, n)`; `0` when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant for test data.
        let wide = u128::from(self.next_u64()) * u128::from(n);
        u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// A uniform integer in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        unit(self.next_u64())
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice (the first when empty is impossible by construction).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[i.min(items.len().saturating_sub(1))]
    }

    /// Index chosen by weight; `weights` must not be empty.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut r = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len().saturating_sub(1)
    }
}

const MASK62: u64 = (1 << 62) - 1;
const ODD: u64 = 0x5851_f42d_4c95_7f2d;

const fn inverse_odd(a: u64) -> u64 {
    // Newton's iteration doubles the number of correct low bits each step.
    let mut inv = a;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(inv)));
        i += 1;
    }
    inv
}

const ODD_INV: u64 = inverse_odd(ODD);

/// Maps indexes to random-looking UUIDs and back, so `GET /users/{id}` finds a generated user
/// without any table: the low 62 bits carry a keyed bijection of the index, the high bits a
/// keyed hash that is checked on decode.
#[derive(Debug, Clone, Copy)]
pub struct IdCodec {
    key_hi: u64,
    key_lo: u64,
}

impl IdCodec {
    /// A codec for one kind of object (`kind` separates users, groups, ...) of one tenant.
    #[must_use]
    pub fn new(seed: u64, kind: u64) -> Self {
        Self {
            key_hi: hash(seed, &[kind, 1]),
            key_lo: hash(seed, &[kind, 2]) & MASK62,
        }
    }

    /// The UUID of object `index`.
    #[must_use]
    pub fn encode(&self, index: u64) -> Uuid {
        let mut x = (index.wrapping_add(self.key_lo)) & MASK62;
        x = x.wrapping_mul(ODD) & MASK62;
        x ^= x >> 31;
        let lo = x | (0b10 << 62);
        let hi = (mix(self.key_hi ^ index) & !0xf000) | 0x4000;
        Uuid::from_u64_pair(hi, lo)
    }

    /// The index of a UUID made by [`IdCodec::encode`], or `None` for any other UUID.
    #[must_use]
    pub fn decode(&self, id: &Uuid) -> Option<u64> {
        let (_, lo) = id.as_u64_pair();
        let mut x = lo & MASK62;
        x ^= x >> 31;
        x = x.wrapping_mul(ODD_INV) & MASK62;
        let index = x.wrapping_sub(self.key_lo) & MASK62;
        (self.encode(index) == *id).then_some(index)
    }
}

/// A keyed pseudo-random permutation of `[0, n)` (4-round Feistel network with cycle walking).
#[derive(Debug, Clone, Copy)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    key: u64,
}

impl Permutation {
    /// A permutation of `[0, n)` keyed by `key`.
    #[must_use]
    pub fn new(n: u64, key: u64) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let bits = bits + (bits % 2);
        Self {
            n,
            half_bits: bits / 2,
            key,
        }
    }

    fn round(&self, x: u64, r: u64) -> u64 {
        mix(x ^ self.key.wrapping_add(r.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    fn enc(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for round in 0..4 {
            let next = l ^ (self.round(r, round) & mask);
            l = r;
            r = next;
        }
        (l << self.half_bits) | r
    }

    fn dec(&self, y: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (y >> self.half_bits, y & mask);
        for round in (0..4).rev() {
            let prev = r ^ (self.round(l, round) & mask);
            r = l;
            l = prev;
        }
        (l << self.half_bits) | r
    }

    /// The image of `x` (which must be below `n`).
    #[must_use]
    pub fn forward(&self, x: u64) -> u64 {
        let mut y = self.enc(x);
        while y >= self.n {
            y = self.enc(y);
        }
        y
    }

    /// The preimage of `y` (which must be below `n`).
    #[must_use]
    pub fn inverse(&self, y: u64) -> u64 {
        let mut x = self.dec(y);
        while x >= self.n {
            x = self.dec(x);
        }
        x
    }
}

/// Unpadded base64url, used for opaque cursors and token segments.
#[must_use]
pub fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 3);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

/// Decodes unpadded base64url; `None` on any invalid character or length.
#[must_use]
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push(u8::try_from((n >> (16 - 8 * i)) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_codec_round_trips_and_rejects_foreign_ids() {
        let codec = IdCodec::new(42, 1);
        for i in [0u64, 1, 2, 999, 1_000_000, 49_999_999] {
            let id = codec.encode(i);
            assert_eq!(codec.decode(&id), Some(i));
            assert_eq!(id.get_version_num(), 4);
        }
        let other = IdCodec::new(43, 1);
        assert_eq!(other.decode(&codec.encode(5)), None);
        assert_eq!(codec.decode(&Uuid::nil()), None);
    }

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 10, 1000, 4097] {
            let p = Permutation::new(n, 7);
            let mut seen = vec![false; usize::try_from(n).unwrap_or(0)];
            for x in 0..n {
                let y = p.forward(x);
                assert!(y < n);
                assert_eq!(p.inverse(y), x);
                let slot = usize::try_from(y).unwrap_or(0);
                assert!(!seen[slot]);
                seen[slot] = true;
            }
        }
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..20u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64url_decode(&b64url(&data)).as_deref(), Some(&data[..]));
        }
        assert_eq!(b64url(b"hi?"), "aGk_");
        assert!(b64url_decode("a").is_none());
        assert!(b64url_decode("a+bc").is_none());
    }
}
