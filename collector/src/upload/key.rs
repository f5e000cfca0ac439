//! Object keys: a pure function of the output file and the range's first offset, so a
//! re-upload after a crash writes the same key with the same bytes.
//!
//! Form (a contract: readers outside the collector rely on it):
//! `<prefix><output file's path under output.dir>/<first offset, 20 digits>`, plus `.zst` when
//! the archive is compressed. Twenty digits hold any u64, so keys sort as their offsets do, and
//! a file's objects concatenated in key order give back the file.

/// Digits of the offset in a key.
const DIGITS: usize = 20;

/// The suffix of a compressed archive's objects.
const ZSTD_SUFFIX: &str = ".zst";

/// Where a key puts an object: the output file (relative to `output.dir`) and its offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectName {
    pub file: String,
    pub offset: u64,
}

/// The key of the object holding `file`'s bytes from `offset`.
pub fn key(prefix: &str, file: &str, offset: u64, compressed: bool) -> String {
    let suffix = if compressed { ZSTD_SUFFIX } else { "" };
    format!("{prefix}{file}/{offset:0DIGITS$}{suffix}")
}

/// Reads a key back (the inverse of [`key`]); `None` for a key not of that form.
pub fn parse(prefix: &str, key: &str, compressed: bool) -> Option<ObjectName> {
    let rest = key.strip_prefix(prefix)?;
    let rest = if compressed {
        rest.strip_suffix(ZSTD_SUFFIX)?
    } else {
        rest
    };
    let (file, digits) = rest.rsplit_once('/')?;
    if file.is_empty() || digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ObjectName {
        file: file.to_string(),
        offset: digits.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_form_of_the_contract_round_trips() {
        let k = key("archive/", "web-1/var/log/app.log.zst", 524288, true);
        assert_eq!(
            k,
            "archive/web-1/var/log/app.log.zst/00000000000000524288.zst"
        );
        assert_eq!(
            parse("archive/", &k, true),
            Some(ObjectName {
                file: "web-1/var/log/app.log.zst".into(),
                offset: 524288
            })
        );
        let plain = key("", "web-1/var/log/app.log", u64::MAX, false);
        assert_eq!(plain, "web-1/var/log/app.log/18446744073709551615");
        assert_eq!(parse("", &plain, false).unwrap().offset, u64::MAX);
        assert_eq!(parse("", "web-1/x/12", false), None);
        assert_eq!(parse("other/", &k, true), None);
        assert_eq!(parse("archive/", &k, false), None);
    }
}
