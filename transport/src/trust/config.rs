//! CometBFT's `[statesync]` section: rendering it, and writing it into a
//! node's `config.toml` without disturbing the rest of the file.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use toml_edit::{DocumentMut, Item, Table, Value};

use super::StateSyncParams;

/// The `[statesync]` keys this module sets, with their values.
fn entries(p: &StateSyncParams) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let height = i64::try_from(p.trust_height).context("trust height too large for CometBFT")?;
    Ok(vec![
        ("enable", p.enable.into()),
        ("rpc_servers", p.rpc_servers.join(",").into()),
        ("trust_height", height.into()),
        ("trust_hash", hex::encode_upper(p.trust_hash).into()),
        ("trust_period", go_duration(p.trust_period).into()),
    ])
}

/// The `[statesync]` section alone, as TOML text.
pub fn statesync_section(p: &StateSyncParams) -> anyhow::Result<String> {
    let mut doc = DocumentMut::new();
    let mut table = Table::new();
    for (key, value) in entries(p)? {
        table.insert(key, Item::Value(value));
    }
    doc.insert("statesync", Item::Table(table));
    Ok(doc.to_string())
}

/// Writes/replaces the `[statesync]` section of a CometBFT config.toml
/// (enable, rpc_servers, trust_height, trust_hash, trust_period), keeping
/// every other line and comment, and the section's other keys; the file is
/// replaced atomically ([`crate::toml_file::rewrite`]).
pub fn write_statesync_section(config_toml: &Path, p: &StateSyncParams) -> anyhow::Result<()> {
    let entries = entries(p)?;
    crate::toml_file::rewrite(config_toml, |doc| {
        if !doc.contains_key("statesync") {
            doc.insert("statesync", Item::Table(Table::new()));
        }
        let table = doc["statesync"]
            .as_table_mut()
            .ok_or_else(|| anyhow!("{}: `statesync` is not a [statesync] table", config_toml.display()))?;
        for (key, value) in entries {
            crate::toml_file::set_keeping_comments(table, key, value);
        }
        Ok(())
    })
    .with_context(|| {
        format!(
            "writing [statesync] into {} (a CometBFT home's config/config.toml)",
            config_toml.display()
        )
    })
}

/// A duration the way Go's `time.Duration.String` writes it (`168h0m0s`),
/// which CometBFT's config parser reads back.
pub fn go_duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if secs == 0 {
        return match nanos {
            0 => "0s".into(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}us", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}{frac}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> StateSyncParams {
        StateSyncParams {
            enable: true,
            rpc_servers: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            trust_height: 42,
            trust_hash: [0xab; 32],
            trust_period: Duration::from_secs(168 * 3600),
        }
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(Duration::from_secs(168 * 3600)), "168h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_section_replaces_its_keys_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let original = "# top comment\nmoniker = \"n\"\n\n[statesync]\n# on or off\nenable = false # inline\n\
                        rpc_servers = \"\"\ntrust_height = 0\ntrust_hash = \"\"\ntrust_period = \"1h0m0s\"\n\
                        discovery_time = \"15s\"\n\n[p2p]\n# keep me\nladdr = \"tcp://0.0.0.0:26656\"\n";
        std::fs::write(&path, original).unwrap();
        write_statesync_section(&path, &params()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for kept in [
            "# top comment",
            "# on or off",
            "# inline",
            "discovery_time = \"15s\"",
            "# keep me",
        ] {
            assert!(text.contains(kept), "{kept} is kept:\n{text}");
        }
        let doc: DocumentMut = text.parse().unwrap();
        let s = &doc["statesync"];
        assert_eq!(s["enable"].as_bool(), Some(true));
        assert_eq!(s["rpc_servers"].as_str(), Some("http://127.0.0.1:1,http://127.0.0.1:2"));
        assert_eq!(s["trust_height"].as_integer(), Some(42));
        assert_eq!(s["trust_hash"].as_str(), Some("AB".repeat(32).as_str()));
        assert_eq!(s["trust_period"].as_str(), Some("168h0m0s"));
        assert_eq!(doc["p2p"]["laddr"].as_str(), Some("tcp://0.0.0.0:26656"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_missing_section_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "moniker = \"n\"\n").unwrap();
        write_statesync_section(&path, &params()).unwrap();
        let doc: DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(doc["moniker"].as_str(), Some("n"));
        assert_eq!(doc["statesync"]["trust_height"].as_integer(), Some(42));
        let alone: DocumentMut = statesync_section(&params()).unwrap().parse().unwrap();
        assert_eq!(alone["statesync"]["trust_period"].as_str(), Some("168h0m0s"));
    }
}
