//! Damage done to GGUF bytes the way disks, interrupted copies and bad converters do
//! it: flipped bits, random bytes, extreme numbers written over count and length
//! fields, cuts, repeated and dropped runs. Shared by the header-reader fuzzing in
//! `fuzz.rs` and the engine-level damage test in `damaged_gguf.rs`.
#![allow(dead_code)]

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Numbers that break counts and lengths: zero, one, a byte, the u32 edge, huge.
const EXTREMES: &[u64] = &[0, 1, 4, 255, u32::MAX as u64, 1 << 40, u64::MAX];

/// `bytes` with one to three of: a flipped bit, a random byte, an extreme number (as
/// u32 or u64) written over whatever is there, a cut, a repeated run, a dropped run.
pub fn mutate(r: &mut ChaCha8Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..r.random_range(1..4) {
        if b.is_empty() {
            break;
        }
        let at = r.random_range(0..b.len());
        match r.random_range(0..6) {
            0 => b[at] ^= 1 << r.random_range(0..8),
            1 => b[at] = r.random(),
            2 => {
                let v = EXTREMES[r.random_range(0..EXTREMES.len())];
                let bytes = v.to_le_bytes();
                let n = if r.random_bool(0.5) { 4 } else { 8 };
                for (i, x) in bytes[..n].iter().enumerate() {
                    if at + i < b.len() {
                        b[at + i] = *x;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + r.random_range(1..64)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => {
                let end = (at + r.random_range(1..32)).min(b.len());
                b.drain(at..end);
            }
        }
    }
    b
}

/// `n` bits flipped anywhere in `bytes`.
pub fn flip_bits(r: &mut ChaCha8Rng, bytes: &mut [u8], n: usize) {
    for _ in 0..n {
        let at = r.random_range(0..bytes.len());
        bytes[at] ^= 1 << r.random_range(0..8);
    }
}

/// A run of 1 to 16 random bytes written at a random place in `bytes`.
pub fn random_run(r: &mut ChaCha8Rng, bytes: &mut [u8]) {
    let at = r.random_range(0..bytes.len());
    let end = (at + r.random_range(1..=16)).min(bytes.len());
    r.fill(&mut bytes[at..end]);
}

/// The file with token string `from` replaced by `to` (same length): two tokens then
/// share one string, the damage that made llama.cpp abort
/// (`GGML_ASSERT(id_to_token.size() == token_to_id.size())`).
pub fn duplicate_token(file: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "same length keeps the file's layout");
    let mut needle = (from.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(from.as_bytes());
    let at = file
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("token `{from}` is in the file"));
    let mut out = file.to_vec();
    out[at + 8..at + 8 + to.len()].copy_from_slice(to.as_bytes());
    out
}
