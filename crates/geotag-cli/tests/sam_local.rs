//! `sam local` for real: the template's functions, as `sam build` built them
//! for arm64, in SAM's own runtime (its containers, its runtime interface
//! emulator, qemu on an x86_64 machine), against the local stack.
//!
//! It needs sam build's `.aws-sam/build` and a Docker daemon it starts itself,
//! so `cargo test` lists it as ignored and scripts/test runs it after sam
//! build. Where dockerd cannot run it fails, with the reason; setting
//! GEOTAG_SAM_LOCAL_OPT_OUT to a reason is the only way past it, and says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_local_docker::sam::Sam;
use geotag_local_docker::{Daemon, SamDocker};

const OPT_OUT: &str = "GEOTAG_SAM_LOCAL_OPT_OUT";

fn root() -> PathBuf {
    geotag_local_cloud::project::root().expect("the project root")
}

/// Docker for SAM: a dockerd of the test's own, stopped when dropped.
async fn docker(scratch: &Path) -> Result<SamDocker> {
    SamDocker::start(
        Daemon::Own(scratch.join("dockerd")),
        &root().join(geotag_local_docker::image::CACHE_DIR),
        &scratch.join("sam-docker.sock"),
    )
    .await
}

async fn item_count(local: &LocalStack, logical_id: &str) -> Result<usize> {
    let table = local.stack.reference(logical_id)?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    Ok(
        geotag_operator::table_scan::scan_all(&dynamodb, table, true)
            .await?
            .len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sam build's .aws-sam/build and dockerd: scripts/test runs it after sam build"]
async fn sam_local_runs_the_templates_functions_against_the_local_stack() -> Result<()> {
    if let Ok(reason) = std::env::var(OPT_OUT) {
        eprintln!("\n*** sam local NOT TESTED: {OPT_OUT} says {reason:?} ***\n");
        return Ok(());
    }
    let root = root();
    ensure!(
        root.join(".aws-sam/build/template.yaml").exists(),
        "no .aws-sam/build: run sam build first (scripts/test does)"
    );
    let scratch = std::env::temp_dir().join(format!("geotag-sam-local-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let docker = docker(&scratch)
        .await
        .context("Docker for sam local (set GEOTAG_SAM_LOCAL_OPT_OUT=reason to skip, loudly)")?;
    eprintln!("base image: {:?}", docker.base_image);

    invoke_each_function(&root, &scratch, &docker.docker_host()).await?;
    demo_under_start_lambda(&root, &docker.docker_host())?;

    drop(docker);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `sam local invoke` of each function with its sample event stores what the
/// in-process handler stores and answers what it answers: run under SAM
/// first, then in-process on the same event, which finds the work done.
async fn invoke_each_function(root: &Path, scratch: &Path, docker_host: &str) -> Result<()> {
    let local = LocalStack::start(&Options::default()).await?;
    let env_vars = scratch.join("sam-env.json");
    local.write_sam_env_vars(&env_vars, "127.0.0.1")?;
    let sam = Sam {
        program: Sam::program_in(root),
        project: root.to_path_buf(),
        env_vars,
        docker_host: docker_host.to_owned(),
    };
    let in_process = Invoker::InProcess(Arc::new(InProcess::for_stack(&local.stack, &local.sdk)?));
    for (logical_id, event, table) in [
        (
            "IngestFunction",
            "events/ingest/valid-batch.json",
            "TelemetryTable",
        ),
        (
            "StatsFunction",
            "events/stats/inserts.json",
            "DeviceStatsTable",
        ),
        (
            "AlertsFunction",
            "events/alerts/latest-changes.json",
            "AlertsTable",
        ),
    ] {
        let before = item_count(&local, table).await?;
        let started = std::time::Instant::now();
        let invocation = sam.invoke(logical_id, &root.join(event))?;
        let answered = invocation.json()?;
        let after_sam = item_count(&local, table).await?;
        eprintln!(
            "sam local invoke {logical_id}: {:.1} s, answered {answered}, {table} {before} -> {after_sam} items",
            started.elapsed().as_secs_f64()
        );
        let spec = local.stack.function(logical_id)?;
        let payload = serde_json::from_str(&std::fs::read_to_string(root.join(event))?)?;
        let in_process_answer = in_process.invoke(spec, payload).await?;
        let after_in_process = item_count(&local, table).await?;
        ensure!(
            answered == in_process_answer,
            "{logical_id} answered {answered} under sam local and {in_process_answer} in-process"
        );
        if logical_id != "AlertsFunction" {
            ensure!(
                after_sam > before,
                "{logical_id} under sam local stored nothing in {table}; SAM's log:\n{}",
                invocation.log
            );
        }
        ensure!(
            after_in_process == after_sam,
            "{table}: {after_sam} items after sam local, {after_in_process} after the same event in-process"
        );
    }
    Ok(())
}

/// `geotag demo --sam-local`: every batch of the demo through `sam local
/// start-lambda`, and the demo's audit green.
fn demo_under_start_lambda(root: &Path, docker_host: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_geotag"))
        .current_dir(root)
        .args(["demo", "--sam-local", "--devices", "6", "--readings", "20"])
        .env("DOCKER_HOST", docker_host)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "geotag demo --sam-local: {:.1} s, {}\n{stdout}",
        started.elapsed().as_secs_f64(),
        output.status
    );
    ensure!(
        output.status.success(),
        "geotag demo --sam-local failed:\n{stdout}\n{stderr}\nsam's log: target/geotag/sam-start-lambda.log"
    );
    ensure!(
        stderr.contains("the functions run in sam local start-lambda at http://127.0.0.1:"),
        "the demo did not run under start-lambda:\n{stderr}"
    );
    Ok(())
}
