//! `geotag sam-docker`: Docker as `sam local` needs it on Linux, kept running
//! until Ctrl-C or SIGTERM.

use anyhow::Result;
use geotag_local_docker::{BaseImage, Daemon, SamDocker};

use crate::args::SamDockerArgs;

pub async fn run(args: SamDockerArgs) -> Result<()> {
    let root = geotag_local_cloud::project::root()?;
    let image_cache = root.join(geotag_local_docker::image::CACHE_DIR);
    if args.cache_image {
        let tarball = tokio::task::spawn_blocking(move || {
            geotag_local_docker::image::cache_stand_in(&image_cache)
        })
        .await??;
        println!("{}", tarball.display());
        return Ok(());
    }
    let daemon = match args.docker_socket {
        Some(socket) => Daemon::Existing(socket),
        None => Daemon::Own(state_dir()),
    };
    let own = matches!(daemon, Daemon::Own(_));
    let docker = SamDocker::start(daemon, &image_cache, &root.join(&args.socket)).await?;
    println!("geotag sam-docker: Docker for sam local is ready (Ctrl-C stops it)\n");
    println!(
        "  daemon       {}",
        match &docker.daemon {
            Some(daemon) => format!(
                "dockerd of our own at {} (no bridge: host network only)",
                daemon.socket().display()
            ),
            None => "the machine's".to_owned(),
        }
    );
    println!(
        "  base image   {} ({})",
        geotag_local_docker::image::LAMBDA_BASE_IMAGE,
        match docker.base_image {
            BaseImage::Lambda => "Lambda's own",
            BaseImage::StandIn =>
                "a Debian bookworm arm64 stand-in: the registry was not reachable",
        }
    );
    println!("  SAM's containers run on the host network, where `geotag up` is\n");
    println!("  in the shell that runs sam:");
    println!("    export DOCKER_HOST={}", docker.docker_host());
    crate::signals::interrupted().await;
    eprintln!(
        "\ngeotag: stopping the proxy{}",
        if own { " and dockerd" } else { "" }
    );
    drop(docker);
    Ok(())
}

/// dockerd's state: a short path, since containerd's socket path inside it
/// must stay under the 108 bytes a Unix socket address holds.
pub fn state_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("geotag-dockerd-{}", std::process::id()))
}
