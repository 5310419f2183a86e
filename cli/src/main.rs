//! The `statesnap` binary's entry point: it runs the parsed command and turns
//! an error into a message and a failing exit status.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // A node logs what it does at info level; other commands only warn.
    let node = matches!(args.command, cli::Command::Start(_));
    cli::init_tracing(args.verbose + u8::from(node));
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
