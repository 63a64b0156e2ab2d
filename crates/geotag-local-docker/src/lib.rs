//! Docker for `sam local` here: the template's functions in SAM's own local
//! runtime, against the local stack on 127.0.0.1.
//!
//! - [`daemon`]: a Docker daemon of our own (no bridge, host network only);
//! - [`proxy`]: the Docker API proxy that puts SAM's Lambda containers on the
//!   host network, where the local stack is;
//! - [`image`]: Lambda's base image or a Debian stand-in, and arm64 emulation;
//! - [`sam`]: `sam local start-lambda` as a child whose port is proven its own.

pub mod daemon;
pub mod image;
pub mod proxy;
pub mod sam;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub use daemon::Dockerd;
pub use image::BaseImage;
pub use proxy::HostNetworkProxy;

/// Docker ready for `sam local`: a daemon (ours, or the machine's), the
/// base image, and the proxy SAM talks to.
pub struct SamDocker {
    pub proxy: HostNetworkProxy,
    pub base_image: BaseImage,
    /// Dropped after the proxy: the daemon outlives every forwarded request.
    pub daemon: Option<Dockerd>,
}

/// Where the daemon comes from.
pub enum Daemon {
    /// Start dockerd with its state under this folder (removed first).
    Own(PathBuf),
    /// The machine's daemon at this Unix socket.
    Existing(PathBuf),
}

impl SamDocker {
    /// Checks arm64 emulation, starts or reaches the daemon, makes sure the
    /// base image is there (building the stand-in into `image_cache` once),
    /// and listens on `socket` for SAM.
    pub async fn start(daemon: Daemon, image_cache: &Path, socket: &Path) -> Result<SamDocker> {
        image::ensure_arm64_runs()?;
        let (daemon, upstream) = match daemon {
            Daemon::Own(state) => {
                let started = tokio::task::spawn_blocking(move || Dockerd::start(&state)).await??;
                let upstream = started.socket().to_path_buf();
                (Some(started), upstream)
            }
            Daemon::Existing(socket) => (None, socket),
        };
        let docker_host = daemon::docker_host_of(&upstream);
        let cache = image_cache.to_path_buf();
        let base_image =
            tokio::task::spawn_blocking(move || image::ensure_base_image(&docker_host, &cache))
                .await?
                .context("the functions' base image")?;
        let proxy = HostNetworkProxy::start(socket, &upstream)?;
        Ok(SamDocker {
            proxy,
            base_image,
            daemon,
        })
    }

    /// `DOCKER_HOST` for SAM.
    pub fn docker_host(&self) -> String {
        self.proxy.docker_host()
    }
}
