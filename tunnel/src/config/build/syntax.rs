//! The file's syntax and shape, via toml and serde, before any rule: their errors (unknown
//! keys, missing keys, a string where a number goes, a key set twice) as problems with a
//! line and a key path.

use std::{collections::BTreeMap, path::Path};

use serde_path_to_error::Segment;

use crate::config::{
    ConfigError, Problem,
    error::{Locator, Step, render},
};

/// Structure and types, via serde: unknown keys, missing keys, a string where a number goes.
pub(super) fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
    locator: &Locator<'_>,
) -> Result<T, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| toml_error(file, locator, None, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path: Vec<Step> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        toml_error(file, locator, Some(&path), e.inner())
    })
}

fn toml_error(
    file: &Path,
    locator: &Locator<'_>,
    path: Option<&[Step]>,
    e: &toml::de::Error,
) -> ConfigError {
    let line = match (e.span(), path) {
        (Some(span), _) => Some(locator.line_at(span.start)),
        (None, Some(path)) => locator.line_of(path),
        (None, None) => None,
    };
    let mut key = path.filter(|p| !p.is_empty()).map(render);
    let mut message = e.message().trim().to_string();
    // toml says only "duplicate key", pointing at the second one: name it.
    if let (Some(span), "duplicate key") = (e.span(), message.as_str()) {
        key = Some(duplicate_key_path(locator.text(), span.start));
        message = format!("`{}` is set twice", &locator.text()[span]);
    }
    ConfigError {
        file: file.into(),
        problems: vec![Problem { line, key, message }],
    }
}

/// The path of a key written a second time at `offset`, as a reader finds it: the table
/// header above it (an array of tables with its index) and the key as written there,
/// `workload[1].name`. A table header written twice is its own path.
fn duplicate_key_path(text: &str, offset: usize) -> String {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    if let Some((name, _)) = table_header(line) {
        return name.to_string();
    }
    let key = line.split('=').next().unwrap_or_default().trim();
    let mut table = None;
    let mut arrays: BTreeMap<&str, usize> = BTreeMap::new();
    for header in text[..line_start]
        .lines()
        .filter_map(|l| table_header(l.trim()))
    {
        table = Some(match header {
            (name, true) => {
                let count = arrays.entry(name).or_default();
                *count += 1;
                format!("{name}[{}]", *count - 1)
            }
            (name, false) => name.to_string(),
        });
    }
    match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    }
}

/// `[name]` → (name, false), `[[name]]` → (name, true); comments after it are ignored.
fn table_header(line: &str) -> Option<(&str, bool)> {
    if let Some(rest) = line.strip_prefix("[[") {
        return Some((rest.split("]]").next()?.trim(), true));
    }
    let rest = line.strip_prefix('[')?;
    Some((rest.split(']').next()?.trim(), false))
}
