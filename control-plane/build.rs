//! Makes sure `frontend/dist` exists, so `cargo build` works without Node: the panel module then
//! embeds an empty folder and serves a page saying how to build the panel. Cargo re-runs this
//! (and rebuilds the crate, re-embedding the files) whenever anything under the folder changes.

fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/dist");
    if let Err(e) = std::fs::create_dir_all(&dist) {
        println!("cargo:warning=could not create {}: {e}", dist.display());
    }
    println!("cargo:rerun-if-changed={}", dist.display());
}
