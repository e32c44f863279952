//! The guest kit behind `surfaces guest new | build`: a guest project made
//! from the template (the echo example, `guest/examples/echo`, which CI
//! builds and tests as it is), and its build for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The template's logic, tests included.
const TEMPLATE_LIB: &str = include_str!("../../guest/examples/echo/src/lib.rs");
/// The template's README (`{{name}}`, `{{crate}}` filled in).
const TEMPLATE_README: &str = include_str!("../../guest/examples/echo/README.md");
/// The versions the SDK is built and tested with: a new project starts
/// from them, not from whatever is newest that day.
const TEMPLATE_LOCK: &str = include_str!("../../guest/Cargo.lock");
/// The toolchain (and its wasm target) the SDK is built and tested with:
/// a project pins it, so rustup builds it with that one wherever it is.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");
/// Where the SDK was when this binary was built (a surfaces checkout).
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest/sdk");
pub const TARGET: &str = "wasm32-wasip2";
/// Names cargo refuses for a package, or that its dependencies hold.
const TAKEN: &[&str] = &[
    "test",
    "self",
    "super",
    "crate",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "serde",
    "surfaces_guest_sdk",
    "wit_bindgen",
    "build",
    "deps",
    "examples",
    "incremental",
];

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{0} exists and is not empty: give a new directory")]
    NotEmpty(PathBuf),
    #[error("{0:?} cannot name a guest: use letters, digits, '-' or '_', starting with a letter")]
    BadName(String),
    #[error("no guest SDK at {0}: pass --sdk with the path of guest/sdk in a surfaces checkout")]
    NoSdk(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no Cargo.toml: not a guest project")]
    NotAProject(PathBuf),
    #[error("could not run cargo: {0}")]
    Cargo(std::io::Error),
    #[error("the build failed ({0}); see cargo's errors above")]
    BuildFailed(std::process::ExitStatus),
    #[error("the build produced no {0}")]
    NoComponent(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KitError + '_ {
    move |source| KitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A project `surfaces guest new` wrote.
#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    /// The package name (the directory's name).
    pub name: String,
    /// The component a release build makes, relative to `dir`.
    pub component: PathBuf,
}

/// Write a guest project into `dir` (new, or empty): the template's logic
/// and tests, a README on building, testing and swapping it in, and a
/// Cargo.toml that depends on the SDK at `sdk` (default: the checkout this
/// binary was built from).
pub fn new_project(dir: &Path, sdk: Option<&Path>) -> Result<Project, KitError> {
    if dir.exists() && dir.read_dir().map_err(io(dir))?.next().is_some() {
        return Err(KitError::NotEmpty(dir.to_path_buf()));
    }
    // `.` or `..` name the directory they stand for.
    let named = match dir.canonicalize() {
        Ok(full) => full,
        Err(_) => dir.to_path_buf(),
    };
    let name = named
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !TAKEN.contains(&name.replace('-', "_").as_str());
    if !valid {
        return Err(KitError::BadName(name));
    }
    let sdk = sdk.map_or_else(|| PathBuf::from(SDK_DIR), Path::to_path_buf);
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or(KitError::NoSdk(sdk))?;
    let crate_name = name.replace('-', "_");
    let files = [
        ("Cargo.toml", manifest(&name, &sdk)),
        ("Cargo.lock", TEMPLATE_LOCK.to_string()),
        ("rust-toolchain.toml", TOOLCHAIN.to_string()),
        ("src/lib.rs", TEMPLATE_LIB.to_string()),
        (
            "README.md",
            TEMPLATE_README
                .replace("{{name}}", &name)
                .replace("{{crate}}", &crate_name),
        ),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(Project {
        dir: dir.to_path_buf(),
        component: component_path(Path::new("target"), &name),
        name,
    })
}

fn manifest(name: &str, sdk: &Path) -> String {
    // The SDK's path as TOML: a basic string with escapes.
    let sdk = toml::Value::String(sdk.display().to_string());
    format!(
        r#"[package]
name = "{name}"
description = "A surfaces guest."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: the same logic natively, for `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
surfaces-guest-sdk = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}

# Small and fast: the component is compiled once per content hash.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A workspace of its own, wherever the project lives.
[workspace]
"#
    )
}

fn component_path(target_dir: &Path, name: &str) -> PathBuf {
    target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Build the project in `dir` for `wasm32-wasip2` (release), cargo's output
/// shown as it goes; the component's path.
pub fn build_project(dir: &Path) -> Result<PathBuf, KitError> {
    let manifest = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).map_err(|_| KitError::NotAProject(dir.to_path_buf()))?;
    let name = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
        .ok_or_else(|| KitError::NotAProject(dir.to_path_buf()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        // Flags meant for this machine's native builds break the wasm link.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(KitError::Cargo)?;
    if !status.success() {
        return Err(KitError::BuildFailed(status));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = component_path(&target_dir, &name);
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(KitError::NoComponent(wasm))
    }
}
