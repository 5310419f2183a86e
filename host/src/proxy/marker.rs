//! Xian's block marker: the key `__latest_block`, whose value is
//! `{"hash":"<lowercase hex>","height":H,"nanos":N}` (N: block H's time in
//! nanoseconds since the epoch). Xian's node writes it in the same write
//! transaction as block H's state and answers Info from it; it is not a
//! consensus key, so it is outside the state root. docs/XIAN.md §9.

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::snapshot::Verified;
use crate::store::xian_lmdb::XianLmdbStore;
use crate::store::StateStore;

/// The key the marker is stored under.
pub const MARKER_KEY: &str = "__latest_block";

/// Which block a Xian home holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMarker {
    pub height: u64,
    pub app_hash: [u8; 32],
    /// Block `height`'s time, in nanoseconds since the Unix epoch.
    pub nanos: u64,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    hash: String,
    height: u64,
    nanos: serde_json::Number,
}

impl BlockMarker {
    /// Parses the stored text of the marker. Xian stores it as JSON text;
    /// a JSON string holding that text is accepted too.
    pub fn parse(stored: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(stored).with_context(|| format!("{MARKER_KEY} is not JSON: {stored:.200}"))?;
        let value = match value {
            serde_json::Value::String(inner) => serde_json::from_str(&inner)
                .with_context(|| format!("{MARKER_KEY} is a string that is not JSON: {inner:.200}"))?,
            other => other,
        };
        let wire: Wire = serde_json::from_value(value)
            .with_context(|| format!("{MARKER_KEY} lacks hash, height or nanos: {stored:.200}"))?;
        let hash = hex::decode(&wire.hash).map_err(|e| anyhow!("{MARKER_KEY}'s hash is not hex: {e}"))?;
        let app_hash: [u8; 32] = hash
            .try_into()
            .map_err(|h: Vec<u8>| anyhow!("{MARKER_KEY}'s hash has {} bytes, not 32", h.len()))?;
        let nanos: u64 = wire
            .nanos
            .as_str()
            .parse()
            .map_err(|_| anyhow!("{MARKER_KEY}'s nanos is not a whole number: {}", wire.nanos))?;
        Ok(BlockMarker {
            height: wire.height,
            app_hash,
            nanos,
        })
    }

    /// Reads the marker of a Xian home (`None`: the home holds no block yet).
    pub fn read(store: &dyn StateStore) -> anyhow::Result<Option<Self>> {
        match store.get(MARKER_KEY)? {
            None => Ok(None),
            Some(stored) => Self::parse(&stored).map(Some),
        }
    }

    /// The JSON text Xian's node reads.
    pub fn render(&self) -> String {
        let nanos: serde_json::Number = self.nanos.to_string().parse().expect("digits are a JSON number");
        serde_json::to_string(&Wire {
            hash: hex::encode(self.app_hash),
            height: self.height,
            nanos,
        })
        .expect("a marker always serializes")
    }

    /// Checks that the marker says block `height`.
    pub fn expect_height(&self, height: u64) -> anyhow::Result<()> {
        if self.height != height {
            bail!(
                "{MARKER_KEY} says height {}, but the app has just committed height {height}",
                self.height
            );
        }
        Ok(())
    }
}

/// Writes the marker of a restored snapshot's block into its verified
/// staging home, before it is installed: Xian's node then starts at the
/// snapshot's height. The height and app hash are the trusted ones the
/// state was checked against; the block time is the manifest's (Xian keeps
/// it beside the state, outside the root).
pub fn mark_restored_home(verified: &Verified) -> anyhow::Result<BlockMarker> {
    let m = verified.manifest();
    let nanos = m.block_time_nanos.ok_or_else(|| {
        anyhow!(
            "the snapshot carries no block time (manifest version {}), which Xian's block marker needs: \
             restore a snapshot made by `statesnap proxy` of a Xian node",
            m.version
        )
    })?;
    let marker = BlockMarker {
        height: m.height,
        app_hash: m.app_hash,
        nanos,
    };
    let mut staging = XianLmdbStore::open(verified.staging())?;
    staging.write_batch(&[(MARKER_KEY.to_string(), Some(marker.render()))])?;
    staging.flush()?;
    Ok(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_render_and_refuse_what_is_not_one() {
        let text = format!(
            r#"{{"hash":"{}","height":42,"nanos":1765000000123456789}}"#,
            "ab".repeat(32)
        );
        let m = BlockMarker::parse(&text).unwrap();
        assert_eq!(
            (m.height, m.app_hash, m.nanos),
            (42, [0xab; 32], 1_765_000_000_123_456_789)
        );
        assert_eq!(BlockMarker::parse(&m.render()).unwrap(), m);
        let quoted = serde_json::to_string(&text).unwrap();
        assert_eq!(BlockMarker::parse(&quoted).unwrap(), m);
        for bad in [
            "nope".to_string(),
            r#"{"height":1}"#.to_string(),
            format!(r#"{{"hash":"{}","height":1,"nanos":0}}"#, "ab".repeat(31)),
            format!(r#"{{"hash":"{}","height":1,"nanos":1.5}}"#, "ab".repeat(32)),
        ] {
            assert!(BlockMarker::parse(&bad).is_err(), "{bad}");
        }
        assert!(m.expect_height(42).is_ok());
        assert!(m.expect_height(43).unwrap_err().to_string().contains("says height 42"));
    }
}
