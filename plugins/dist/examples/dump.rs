//! Writes each embedded plugin to `<dir>/<name>.wasm`: the test of this crate
//! builds it under two profiles and compares what each embeds.

fn main() {
    let dir = std::env::args().nth(1).expect("usage: dump DIR");
    for (name, bytes) in statesnap_builtins::BUILT_IN {
        std::fs::write(format!("{dir}/{name}.wasm"), bytes).expect("writing");
    }
}
