//! Lambda's base image for the template's runtime, or a stand-in where the
//! registry cannot be reached, and the arm64 emulation the image needs on an
//! x86_64 machine.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::daemon::docker_cli;

/// The image SAM runs `provided.al2023` arm64 functions on.
pub const LAMBDA_BASE_IMAGE: &str = "public.ecr.aws/lambda/provided:al2023-arm64";

/// Where the stand-in's tarball is kept between runs (debootstrap takes 90 s),
/// under the project root.
pub const CACHE_DIR: &str = "target/geotag/images";

/// What the daemon runs the functions on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImage {
    /// Lambda's own image, already in the daemon.
    Lambda,
    /// Debian bookworm arm64 imported under Lambda's tag: SAM adds its runtime
    /// interface emulator and mounts the function's code, so a `provided`
    /// function needs nothing from the image but a root file system and a libc
    /// (bookworm's glibc 2.36 is newer than al2023's 2.34, which the
    /// functions are built against).
    StandIn,
}

/// Makes sure `LAMBDA_BASE_IMAGE` is in the daemon at `docker_host`: Lambda's
/// own if present, else the stand-in, built once by debootstrap (about 90 s,
/// 225 MB) and cached as a tarball under `cache`.
pub fn ensure_base_image(docker_host: &str, cache: &Path) -> Result<BaseImage> {
    if docker_cli(docker_host, &["image", "inspect", LAMBDA_BASE_IMAGE]).is_ok() {
        return Ok(BaseImage::Lambda);
    }
    let tarball = cache_stand_in(cache)?;
    let tarball_arg = tarball.to_string_lossy();
    docker_cli(
        docker_host,
        &[
            "import",
            "--platform",
            "linux/arm64",
            &tarball_arg,
            LAMBDA_BASE_IMAGE,
        ],
    )
    .context("importing the stand-in base image")?;
    Ok(BaseImage::StandIn)
}

/// The stand-in's tarball in `cache`, built first if it is not there yet.
pub fn cache_stand_in(cache: &Path) -> Result<std::path::PathBuf> {
    let tarball = cache.join("bookworm-arm64-minbase.tar");
    if !tarball.exists() {
        build_stand_in(&tarball)?;
    }
    Ok(tarball)
}

fn build_stand_in(tarball: &Path) -> Result<()> {
    let folder = tarball.parent().context("the cache folder")?;
    std::fs::create_dir_all(folder)?;
    let rootfs = folder.join("bookworm-arm64.partial");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    eprintln!(
        "geotag: building a stand-in for {LAMBDA_BASE_IMAGE} (debootstrap, about 90 s, once)"
    );
    run(Command::new("debootstrap")
        .args(["--arch=arm64", "--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian"))
    .context("debootstrap (Debian's debootstrap package: scripts/setup installs it)")?;
    let partial = tarball.with_extension("tar.partial");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&partial)
        .arg("."))?;
    std::fs::rename(&partial, tarball)?;
    std::fs::remove_dir_all(&rootfs)?;
    Ok(())
}

/// Fails, saying how to fix it, unless this machine runs arm64 binaries:
/// natively, or through qemu-user-static registered with binfmt_misc with the
/// F flag (the interpreter opened at registration, so that it works inside a
/// container's root file system too).
pub fn ensure_arm64_runs() -> Result<()> {
    if std::env::consts::ARCH == "aarch64" {
        return Ok(());
    }
    let entry = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    let registration = std::fs::read_to_string(entry).unwrap_or_default();
    let enabled = registration.lines().next() == Some("enabled");
    let fixed = registration
        .lines()
        .any(|line| line.starts_with("flags:") && line.contains('F'));
    if !(enabled && fixed) {
        bail!(
            "this {} machine cannot run the functions' arm64 binaries: install qemu-user-static and \
             binfmt-support, then `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` and \
             `update-binfmts --enable qemu-aarch64` (scripts/setup does this); {} says {:?}",
            std::env::consts::ARCH,
            entry.display(),
            registration.lines().next().unwrap_or("nothing")
        );
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<_> = stderr.lines().rev().take(10).collect();
        bail!(
            "{command:?} failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}
