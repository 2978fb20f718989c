//! Just enough DER to find the parts of a CRL and of a certificate that revocation needs.
//! webpki has parsed and accepted both by the time this reads them, so a failure here means
//! the two parsers disagree: callers refuse (never allow) when it happens.

/// A DER encoding this reader does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Malformed;

impl From<Malformed> for webpki::Error {
    fn from(_: Malformed) -> Self {
        webpki::Error::BadDer
    }
}

pub(super) const BOOLEAN: u8 = 0x01;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const OID: u8 = 0x06;
pub(super) const SEQUENCE: u8 = 0x30;
/// `[n]` of a constructed, context-specific field.
pub(super) const fn explicit(n: u8) -> u8 {
    0xa0 | n
}
/// `[n]` of a primitive, context-specific field.
pub(super) const fn implicit(n: u8) -> u8 {
    0x80 | n
}

/// One element: its tag, its contents, and the whole encoding (tag and length included).
#[derive(Clone, Copy, Debug)]
pub(super) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

/// Elements one after another.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn read(&mut self) -> Result<Tlv<'a>, Malformed> {
        let input = self.rest;
        let (&tag, rest) = input.split_first().ok_or(Malformed)?;
        // Single-byte tags only, as webpki (high tag numbers are never used here).
        if tag & 0x1f == 0x1f {
            return Err(Malformed);
        }
        let (&first, mut rest) = rest.split_first().ok_or(Malformed)?;
        let length = match first {
            0..=0x7f => usize::from(first),
            0x81..=0x84 => {
                let (bytes, after) = rest
                    .split_at_checked(usize::from(first & 0x7f))
                    .ok_or(Malformed)?;
                rest = after;
                bytes.iter().fold(0usize, |n, b| n << 8 | usize::from(*b))
            }
            // Indefinite lengths are BER, not DER; longer ones cannot be real.
            _ => return Err(Malformed),
        };
        let (value, after) = rest.split_at_checked(length).ok_or(Malformed)?;
        let header = input.len() - rest.len();
        self.rest = after;
        Ok(Tlv {
            tag,
            value,
            raw: &input[..header + length],
        })
    }

    /// The next element, which must have this tag.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, Malformed> {
        let tlv = self.read()?;
        if tlv.tag == tag {
            Ok(tlv)
        } else {
            Err(Malformed)
        }
    }

    /// The next element if it has this tag; nothing is consumed otherwise.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, Malformed> {
        match self.rest.first() {
            Some(&next) if next == tag => self.read().map(Some),
            _ => Ok(None),
        }
    }
}

/// The contents of a BIT STRING that must have no unused bits (a key, a signature).
pub(super) fn whole_bytes(bit_string: Tlv<'_>) -> Result<&[u8], Malformed> {
    match bit_string.value.split_first() {
        Some((0, bytes)) if bit_string.tag == BIT_STRING => Ok(bytes),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let long = [&[0x04, 0x81, 0x80][..], &[7; 0x80]].concat();
        let input = [&[0x30, 0x03, 0x02, 0x01, 0x05][..], &long].concat();
        let mut reader = Reader::new(&input);
        let sequence = reader.expect(SEQUENCE).unwrap();
        assert_eq!(sequence.value, [0x02, 0x01, 0x05]);
        assert_eq!(sequence.raw, &input[..5]);
        assert_eq!(
            Reader::new(sequence.value).expect(INTEGER).unwrap().value,
            [5]
        );
        let octets = reader.expect(OCTET_STRING).unwrap();
        assert_eq!(octets.value.len(), 0x80);
        assert_eq!(octets.raw.len(), 0x83);
        assert!(reader.is_empty());
    }

    #[test]
    fn refuses_what_is_not_der() {
        for input in [
            &[0x30][..],                  // no length
            &[0x30, 0x02, 0x01],          // shorter than it says
            &[0x30, 0x80, 0x00, 0x00],    // indefinite length
            &[0x30, 0x85, 1, 0, 0, 0, 0], // five length bytes
            &[0x1f, 0x01, 0x00],          // high tag number
        ] {
            assert_eq!(
                Reader::new(input).read().err(),
                Some(Malformed),
                "{input:?}"
            );
        }
        assert!(Reader::new(&[0x02, 0x00]).expect(SEQUENCE).is_err());
        let mut reader = Reader::new(&[0x02, 0x00]);
        assert!(reader.optional(SEQUENCE).unwrap().is_none());
        assert!(reader.optional(INTEGER).unwrap().is_some());
    }

    #[test]
    fn a_key_or_signature_has_no_unused_bits() {
        let tlv = |bytes: &'static [u8]| Reader::new(bytes).read().unwrap();
        assert_eq!(
            whole_bytes(tlv(&[0x03, 0x03, 0x00, 0xab, 0xcd])),
            Ok(&[0xab, 0xcd][..])
        );
        assert!(whole_bytes(tlv(&[0x03, 0x02, 0x01, 0xab])).is_err());
        assert!(whole_bytes(tlv(&[0x04, 0x02, 0x00, 0xab])).is_err());
    }
}
