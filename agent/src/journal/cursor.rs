//! A journal cursor (`__CURSOR`), and the place of an entry it names.
//!
//! A cursor reads `s=<seqnum id>;i=<seqnum>;b=<boot id>;m=<monotonic>;t=<realtime>;x=<hash>`
//! (hex). The sequence-number id and number name an entry within one journal: journald keeps the
//! id across file rotation and vacuum, so (id, seqnum) is the entry's identity and its
//! position, and the message id is built from it.

/// Where an entry sits in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The sequence-number id (128 bits).
    pub seqnum_id: u128,
    pub seqnum: u64,
    /// Microseconds since the Unix epoch (`t=`), 0 when the cursor has none.
    pub realtime_us: u64,
}

impl Place {
    /// Reads the place out of a cursor; `None` if it lacks `s=` or `i=`.
    pub fn of(cursor: &str) -> Option<Place> {
        let (mut seqnum_id, mut seqnum, mut realtime_us) = (None, None, 0);
        for part in cursor.split(';') {
            match part.split_once('=') {
                Some(("s", hex)) => seqnum_id = u128::from_str_radix(hex, 16).ok(),
                Some(("i", hex)) => seqnum = u64::from_str_radix(hex, 16).ok(),
                Some(("t", hex)) => realtime_us = u64::from_str_radix(hex, 16).unwrap_or(0),
                _ => {}
            }
        }
        Some(Place {
            seqnum_id: seqnum_id?,
            seqnum: seqnum?,
            realtime_us,
        })
    }

    /// Whether both name the same entry.
    pub fn same_entry(&self, other: &Place) -> bool {
        self.seqnum_id == other.seqnum_id && self.seqnum == other.seqnum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_its_entry() {
        let cursor = "s=0aad8d5baf4c4232a33769b2d24ed1d8;i=3;b=0123456789abcdef0123456789abcdef;m=3ea;t=661a39bfd8853;x=21d5d701d55ec604";
        let place = Place::of(cursor).unwrap();
        assert_eq!(place.seqnum_id, 0x0aad8d5baf4c4232a33769b2d24ed1d8);
        assert_eq!(place.seqnum, 3);
        assert_eq!(place.realtime_us, 0x661a39bfd8853);
        let other_hash = cursor.replace("x=21d5d701d55ec604", "x=0");
        assert!(place.same_entry(&Place::of(&other_hash).unwrap()));
        assert!(!place.same_entry(&Place::of(&cursor.replace("i=3", "i=4")).unwrap()));
        for bad in ["", "s=zz;i=1", "s=ab", "i=1;t=5", "garbage"] {
            assert_eq!(Place::of(bad), None, "{bad}");
        }
    }
}
