//! Embeds the admin console (`ui/`, every file, sorted by path) into the binary: writes
//! `$OUT_DIR/ui_assets.rs` with one `include_bytes!` per file, so no hand-kept list can drift
//! and the served bytes are exactly the committed ones. A build without `ui/` fails: a binary
//! without its console is a broken build.

// Cargo reads its instructions from the build script's standard output.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ui = manifest.join("ui");
    println!("cargo:rerun-if-changed=ui");
    assert!(
        ui.join("index.html").is_file(),
        "the admin console is missing: {} must exist",
        ui.join("index.html").display()
    );
    let mut files = Vec::new();
    walk(&ui, &mut files);
    let mut src = String::from("/// Every file under `ui/`: (path relative to `ui/`, bytes).\n");
    src.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let rel = f
            .strip_prefix(&ui)
            .expect("under ui/")
            .to_str()
            .expect("UTF-8 file names under ui/")
            .replace('\\', "/");
        // Hidden files (editor swap files and the like) are not part of the console.
        if rel.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        writeln!(
            src,
            "    ({rel:?}, include_bytes!({:?})),",
            f.display().to_string()
        )
        .expect("write to String");
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("ui_assets.rs");
    std::fs::write(&out, src).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
