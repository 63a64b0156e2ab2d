//! Where the project's files are: the template, the sample events, and the
//! `.venv` that holds the emulator.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The repository root: the nearest ancestor of the working directory that
/// holds both `template.yaml` and `Cargo.toml`, or `GEOTAG_ROOT` if set.
pub fn root() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("GEOTAG_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let start = std::env::current_dir()?;
    for dir in start.ancestors() {
        if is_root(dir) {
            return Ok(dir.to_path_buf());
        }
    }
    // Tests and `cargo run` from elsewhere: the checkout this crate was built in.
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_root(&built_in) {
        return Ok(built_in.canonicalize()?);
    }
    bail!(
        "no template.yaml above {}; run from the geotag checkout or set GEOTAG_ROOT",
        start.display()
    )
}

fn is_root(dir: &Path) -> bool {
    dir.join("template.yaml").is_file() && dir.join("Cargo.toml").is_file()
}

/// Writes `contents` to `path`, creating the folders it needs.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
