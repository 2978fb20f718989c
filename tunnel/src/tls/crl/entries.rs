//! The entries of one CRL, held compactly: every serial in one sorted block of bytes, and
//! beside it, entry by entry, where the serial ends, when it was revoked and why. About 13
//! bytes per entry on top of the serial itself, against ~150 for webpki's owned parse (a
//! B-tree of two heap-allocated copies of each serial); a lookup is a binary search.

use std::cmp::Ordering;

use webpki::{BorrowedCertRevocationList, RevocationReason};

/// No reason code in the entry.
const NO_REASON: u8 = u8::MAX;

pub(super) struct Entries {
    /// The serials (their DER INTEGER contents, as webpki compares them), sorted, end to end.
    serials: Box<[u8]>,
    /// Where serial `i` ends in `serials` (it starts where `i - 1` ends).
    ends: Box<[u32]>,
    /// Unix seconds.
    revoked_at: Box<[u64]>,
    /// The RFC 5280 reason code, or [`NO_REASON`].
    reasons: Box<[u8]>,
    /// Entries in the list, a serial listed twice counted twice.
    listed: usize,
}

/// What a CRL says of one serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds.
    pub revoked_at: u64,
    pub reason: Option<RevocationReason>,
}

impl Entries {
    /// Every entry of `list`, each parsed by webpki as its own parse of the list does (an
    /// entry it would refuse makes the list refused). When a serial is listed twice the later
    /// entry counts, as in webpki's owned list.
    pub fn collect(list: &BorrowedCertRevocationList<'_>) -> Result<Self, webpki::Error> {
        let mut listed = Vec::new();
        let mut bytes = 0usize;
        for entry in list {
            let entry = entry?;
            bytes += entry.serial_number.len();
            let reason = entry.reason_code.map_or(NO_REASON, |r| r as u8);
            listed.push((entry.serial_number, entry.revocation_date.as_secs(), reason));
        }
        // Stable: of the same serial listed twice, the later entry stays last.
        listed.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept = listed.len();
        for pair in listed.windows(2) {
            if pair[0].0 == pair[1].0 {
                kept -= 1;
                bytes -= pair[0].0.len();
            }
        }
        let mut serials = Vec::with_capacity(bytes);
        let mut ends = Vec::with_capacity(kept);
        let mut revoked_at = Vec::with_capacity(kept);
        let mut reasons = Vec::with_capacity(kept);
        for (i, (serial, at, reason)) in listed.iter().enumerate() {
            if listed.get(i + 1).is_some_and(|next| next.0 == *serial) {
                continue;
            }
            serials.extend_from_slice(serial);
            ends.push(u32::try_from(serials.len()).map_err(|_| webpki::Error::BadDer)?);
            revoked_at.push(*at);
            reasons.push(*reason);
        }
        Ok(Self {
            serials: serials.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            revoked_at: revoked_at.into_boxed_slice(),
            reasons: reasons.into_boxed_slice(),
            listed: listed.len(),
        })
    }

    /// Distinct serials listed.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Entries in the list, a serial listed twice counted twice.
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// The entry of `serial` (the DER INTEGER contents of a certificate's serial number).
    pub fn find(&self, serial: &[u8]) -> Option<Entry> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.serial(middle).cmp(serial) {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => {
                    return Some(Entry {
                        revoked_at: self.revoked_at[middle],
                        reason: RevocationReason::try_from(self.reasons[middle]).ok(),
                    });
                }
            }
        }
        None
    }

    /// What the entries take on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.serials.len()
            + size_of_val(&*self.ends)
            + size_of_val(&*self.revoked_at)
            + self.reasons.len()
    }

    fn serial(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p] as usize);
        &self.serials[start..self.ends[i] as usize]
    }
}
