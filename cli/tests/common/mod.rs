//! Helpers of the binary's tests: the engine's test helpers
//! (`host/tests/common`), and running the `statesnap` binary.
#![allow(dead_code, unused_imports)]

#[path = "../../../host/tests/common/mod.rs"]
mod engine;
pub use engine::*;

pub mod gov;
pub mod net;
pub mod xian;

/// Runs the statesnap binary, which must succeed; returns its stdout.
pub fn statesnap_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "statesnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
