//! Embed the scenario corpus (`scenarios/`, `scenarios/regressions/`) so
//! a candidate guest is checked against it wherever the binary runs
//! (`surfaces guest test`, behaviour-checked swaps).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut files = Vec::new();
    for dir in ["scenarios", "scenarios/regressions"] {
        let path = manifest.join(dir);
        println!("cargo:rerun-if-changed={}", path.display());
        let entries = std::fs::read_dir(&path).expect("the scenario corpus is readable");
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "toml") {
                let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
                files.push((name, p));
            }
        }
    }
    files.sort();
    let mut out = String::from("/// The scenario corpus: (path under simulator/, TOML).\n");
    out.push_str("pub const SCENARIOS: &[(&str, &str)] = &[\n");
    for (name, path) in &files {
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("corpus.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
