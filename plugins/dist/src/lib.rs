//! The built-in snapshot format plugins, as the committed artifacts beside
//! this crate (reproducible builds of `plugins/<name>` made by
//! `scripts/build-plugins.sh`), not whatever the local compiler makes of the
//! source: a plugin's SHA-256 names its format in every manifest, so every
//! host must embed the same bytes whatever compiler, profile or features
//! built it. This crate has no dependencies and no features for that reason.

/// The built-in plugins, by name. The first is the default.
pub const BUILT_IN: &[(&str, &[u8])] = &[
    ("zstd", include_bytes!("../zstd.wasm")),
    ("gzip", include_bytes!("../gzip.wasm")),
    ("brotli", include_bytes!("../brotli.wasm")),
];

/// `plugins.lock`: each built-in's SHA-256, file and package.
pub const LOCK: &str = include_str!("../plugins.lock");

/// The lock's entries: (file, hex SHA-256), in order.
pub fn locked() -> Vec<(&'static str, &'static str)> {
    LOCK.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let sum = f.next()?;
            Some((f.next()?, sum))
        })
        .collect()
}
