//! Values in words: a TLS enum's or a variant's bare name, a time.

use rustls::pki_types::UnixTime;

use crate::identity::timestamp;

/// A TLS enum value's name, or its number when rustls does not know it.
pub(super) fn enum_name(name: Option<&str>, number: u8) -> String {
    name.map_or_else(|| format!("unknown ({number})"), str::to_string)
}

/// "A or B or C".
pub(super) fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(" or ")
}

/// A variant's name without its fields, for variants too rare to deserve a sentence of
/// their own (and those added to rustls's non-exhaustive enums later).
pub(super) fn variant_name(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let end = debug
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(debug.len());
    debug[..end].to_string()
}

pub(super) fn time(at: UnixTime) -> String {
    timestamp(i64::try_from(at.as_secs()).unwrap_or(i64::MAX))
}
