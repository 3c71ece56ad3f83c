//! FNV-1a, 64 bits: the stable hash of cache keys, index model keys, SEARLE's run fingerprints
//! and its inverter's image keys (std's hasher may change between Rust releases; these keys are
//! stored on disk).

/// An FNV-1a hash being computed.
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a over a sequence of parts, each followed by the separator byte 0xff, so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = Fnv::new();
    for part in parts {
        h.write(part);
        h.write(&[0xff]);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_fnv1a_and_stay_what_stored_keys_were_made_with() {
        let mut h = Fnv::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of \"a\"");
        // Computed by the separate implementations these replaced (bench/cache.rs, searle/store.rs).
        assert_eq!(of_parts([b"a".as_slice()]), 0x089b_c907_b544_c769);
        assert_eq!(of_parts([b"lincir".as_slice(), b"index".as_slice()]), 0x1c9e_5127_78ae_af02);
        assert_ne!(of_parts([b"ab".as_slice(), b"c".as_slice()]), of_parts([b"a".as_slice(), b"bc".as_slice()]));
    }
}
