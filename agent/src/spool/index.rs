//! Segment index records in the spool's sled tree: `q<seq: u64 BE>` ->
//! `<lines: u32 BE><bytes: u64 BE>`.

use super::Seq;

pub(super) fn seq_key(seq: Seq) -> [u8; 9] {
    let mut key = [b'q'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn decode_seq(key: &[u8]) -> Seq {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

pub(super) fn encode_index(lines: u32, bytes: u64) -> [u8; 12] {
    let mut value = [0u8; 12];
    value[..4].copy_from_slice(&lines.to_be_bytes());
    value[4..].copy_from_slice(&bytes.to_be_bytes());
    value
}

pub(super) fn decode_index(value: &[u8]) -> (u32, u64) {
    let lines = value
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    let bytes = value
        .get(4..12)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    (lines, bytes)
}
