//! Trust from CometBFT's light client on the command line: the `--trust-*`
//! arguments other commands flatten in, and `statesnap statesync-config`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use statesnap_transport::trust::{self, TrustAnchor, TrustSpec};

/// Where trust starts and how long it may take, shared by every command
/// that checks headers with the light client.
#[derive(Args, Debug, Clone)]
pub struct TrustOptions {
    /// The trust anchor: `auto` (a recent header every RPC agrees on; needs 2
    /// RPCs) or HEIGHT:HASH (a header hash from a source you trust).
    #[arg(long, value_name = "auto|HEIGHT:HASH", default_value = "auto", value_parser = parse_anchor)]
    pub trust: TrustAnchor,
    /// How long a trusted header stays trusted (shorter than the chain's unbonding period).
    #[arg(long, value_name = "DURATION", default_value = "168h", value_parser = humantime::parse_duration)]
    pub trust_period: Duration,
    /// How long to wait for a block to exist, and for each RPC read.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub trust_timeout: Duration,
}

impl TrustOptions {
    fn spec(&self, rpcs: &[String]) -> TrustSpec {
        TrustSpec {
            rpcs: rpcs.to_vec(),
            anchor: self.trust.clone(),
            period: self.trust_period,
            timeout: self.trust_timeout,
        }
    }
}

/// Take the app hash from CometBFT's light client: flattened into commands
/// that restore or check a snapshot.
#[derive(Args, Debug, Clone)]
pub struct TrustArgs {
    /// CometBFT RPC servers to verify headers from (the first is the light
    /// client's primary, the others witnesses it is cross-checked against).
    #[arg(long, value_name = "URL,URL", value_delimiter = ',')]
    pub trust_rpc: Vec<String>,
    #[command(flatten)]
    pub options: TrustOptions,
}

impl TrustArgs {
    /// The trust to take app hashes with; `None` when no `--trust-rpc` is given.
    pub fn spec(&self) -> anyhow::Result<Option<TrustSpec>> {
        let rpcs: Vec<String> = self
            .trust_rpc
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        if rpcs.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.options.spec(&rpcs)))
    }
}

#[derive(Args, Debug)]
pub struct StatesyncConfigArgs {
    /// CometBFT RPC servers (at least 2): the new node's light client reads
    /// them, and they must agree on the trusted header.
    #[arg(long, value_name = "URL,URL", value_delimiter = ',', required = true)]
    pub rpc: Vec<String>,
    #[command(flatten)]
    pub options: TrustOptions,
    /// Write the section into this CometBFT config.toml (keeping the rest of
    /// the file) instead of printing it.
    #[arg(long, value_name = "PATH/config.toml")]
    pub write: Option<PathBuf>,
}

/// `statesnap statesync-config`: a checked `[statesync]` section.
pub fn statesync_config(a: StatesyncConfigArgs) -> anyhow::Result<()> {
    let params = trust::statesync_params(&a.options.spec(&a.rpc))?;
    match &a.write {
        Some(path) => {
            trust::write_statesync_section(path, &params)?;
            eprintln!(
                "wrote [statesync] into {}: trust_height {}, trust_hash {}, rpc_servers {}",
                path.display(),
                params.trust_height,
                hex::encode_upper(params.trust_hash),
                params.rpc_servers.join(",")
            );
        }
        None => print!("{}", trust::statesync_section(&params)?),
    }
    Ok(())
}

/// `auto` or `HEIGHT:HASH` (hex, either case).
fn parse_anchor(s: &str) -> anyhow::Result<TrustAnchor> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(TrustAnchor::Auto);
    }
    let Some((height, hash)) = s.split_once(':') else {
        bail!("`{s}` is neither `auto` nor HEIGHT:HASH");
    };
    let height: u64 = height
        .trim()
        .parse()
        .with_context(|| format!("`{height}` is not a block height"))?;
    if height == 0 {
        bail!("the trust height must be 1 or more");
    }
    Ok(TrustAnchor::Pinned {
        height,
        hash: super::parse_hash(hash)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_parse() {
        assert_eq!(parse_anchor("auto").unwrap(), TrustAnchor::Auto);
        let hash = "AB".repeat(32);
        assert_eq!(
            parse_anchor(&format!("12:{hash}")).unwrap(),
            TrustAnchor::Pinned {
                height: 12,
                hash: [0xab; 32]
            }
        );
        assert!(parse_anchor("12").is_err());
        assert!(parse_anchor(&format!("0:{hash}")).is_err());
        assert!(parse_anchor("12:abcd").is_err());
    }
}
