//! The tracker script's variants (`script.js`, `script.engagement.js`, …) by name: which path
//! names which variant, for routing (the collector) and for validating paths (the config).

/// The variants' extensions joined by `.`, sorted, in the order of the collector's embedded
/// files (`""` is the core script).
pub const VARIANT_NAMES: [&str; 8] = [
    "",
    "engagement",
    "file-downloads",
    "outbound-links",
    "engagement.file-downloads",
    "engagement.outbound-links",
    "file-downloads.outbound-links",
    "engagement.file-downloads.outbound-links",
];

/// Which variant `path` names, given `script_path` (`/js/script.js`): `script_path` itself
/// is the core script, and `/js/script.<ext>[.<ext>…].js` adds extensions in any order.
pub fn variant_of(path: &str, script_path: &str) -> Option<usize> {
    if path == script_path {
        return Some(0);
    }
    let stem = script_path.strip_suffix(".js")?;
    let middle = path
        .strip_prefix(stem)?
        .strip_prefix('.')?
        .strip_suffix(".js")?;
    let mut parts: Vec<&str> = middle.split('.').collect();
    parts.sort_unstable();
    parts.dedup();
    let key = parts.join(".");
    VARIANT_NAMES
        .iter()
        .position(|name| *name == key && !name.is_empty())
}

/// The file name of variant `index`, e.g. `script.engagement.js`.
pub fn file_name(index: usize) -> String {
    match VARIANT_NAMES[index] {
        "" => "script.js".into(),
        name => format!("script.{name}.js"),
    }
}

/// How many variants there are.
pub fn variant_count() -> usize {
    VARIANT_NAMES.len()
}
