//! The `statesnap` binary's entry point: it runs the parsed command and turns
//! an error into a message and a failing exit status.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Buffers of this size and more (snapshot chunks: megabytes) are mapped and
/// given back to the system when freed. glibc otherwise raises this
/// threshold as it frees them and keeps them in per-thread arenas: chunks
/// fetched on I/O threads and freed on the restoring thread added about
/// 100 MiB to a 10M-key restore's peak RSS (docs/BENCHMARKS.md §10).
const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called first
    // in main, before this process has started any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
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
