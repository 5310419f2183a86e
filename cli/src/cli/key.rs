//! `statesnap key …`: making account key files and showing whose they are.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use statesnap::protocol::account_key;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate an account key file (CometBFT priv_validator_key.json format, mode 0600).
    New {
        /// The file to create; an existing file is never replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's account (hex public key) and CometBFT address as JSON.
    Show { file: PathBuf },
}

pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    let key = match cmd {
        KeyCommand::New { out } => {
            let key = account_key::generate();
            account_key::write_new(&out, &key)?;
            key
        }
        KeyCommand::Show { file } => account_key::read(&file)?,
    };
    let vk = key.verifying_key();
    println!(
        "{}",
        json!({"account": account_key::account_hex(&vk), "address": account_key::address(&vk)})
    );
    Ok(())
}
