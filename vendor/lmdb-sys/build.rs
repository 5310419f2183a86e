//! Compiles the vendored LMDB 0.9 sources (`lmdb/`) the way Python's `lmdb`
//! package compiles its bundled 0.9 engine on Linux: the default robust
//! pthread mutexes in the lock file, the default ID-list size. Both choices
//! are part of the lock file's format (`MDB_LOCK_FORMAT`), so they must match
//! for statesnap and a Python process to share one environment.

use std::path::PathBuf;

fn main() {
    let lmdb = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("lmdb");
    println!("cargo::rerun-if-changed=lmdb");

    let mut build = cc::Build::new();
    build
        .file(lmdb.join("mdb.c"))
        .file(lmdb.join("midl.c"))
        // As py-lmdb builds it: LMDB's sources are not ours to lint.
        .warnings(false)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wbad-function-cast")
        .flag_if_supported("-Wuninitialized");
    if cfg!(feature = "posix-sem") {
        // Changes the lock file's format: only for environments no Python
        // process opens.
        build.define("MDB_USE_POSIX_SEM", None);
    }
    if cfg!(feature = "use-valgrind") {
        build.define("USE_VALGRIND", None);
    }
    if cfg!(feature = "asan") {
        build.flag("-fsanitize=address");
    }
    if cfg!(feature = "longer-keys") {
        build.define("MDB_MAXKEYSIZE", "0");
    }
    if !cfg!(debug_assertions) {
        build.define("NDEBUG", None);
    }
    build.compile("liblmdb.a");
}
