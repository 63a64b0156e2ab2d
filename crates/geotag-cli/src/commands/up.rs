//! `geotag up`: the local stack, kept running for interactive work (the
//! AWS CLI, `cargo lambda watch`, `geotag simulate`) until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Result;
use geotag_local_api::{Gateway, LocalApi, LocalIssuer};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::pump::{Pump, PumpOptions};
use geotag_local_cloud::stack::{LocalStack, default_container_host};
use geotag_local_iot::local::{LocalIot, STATE_DIR};

use crate::args::UpArgs;
use crate::commands::device::BROKER_FILE;

pub async fn run(args: UpArgs) -> Result<()> {
    let local = LocalStack::start(&args.stack.options()?).await?;
    let env_file = local.root.join(&args.env_file);
    local.write_env_file(&env_file)?;
    let sam_env_vars = local.root.join(&args.sam_env_vars);
    let container_host = args
        .container_host
        .clone()
        .unwrap_or_else(|| default_container_host().to_owned());
    local.write_sam_env_vars(&sam_env_vars, &container_host)?;
    let iot = LocalIot::start(&local.stack, &local.sdk, &local.root.join(STATE_DIR)).await?;
    geotag_local_iot::ca::write_file(
        &iot.state_dir.join(BROKER_FILE),
        &format!("127.0.0.1:{}\n", iot.broker.port()),
        0o644,
    )?;
    let (invoker, sam_local) = args.stack.invoker(&local).await?;
    let api = start_api(&local, invoker.clone(), args.api_port).await?;
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        invoker,
        PumpOptions {
            time_scale: args.stack.time_scale,
            play_schedules: true,
            ..PumpOptions::default()
        },
    );
    print_up(
        &local,
        &iot,
        &api,
        &Written {
            env_file,
            sam_env_vars,
        },
        args.stack.invoke_endpoint.is_some() || sam_local.is_some(),
    );
    crate::signals::interrupted().await;
    eprintln!("\ngeotag: stopping the API, the broker, the pump and the emulator");
    api.stop().await;
    iot.broker.stop();
    pump.stop().await;
    drop(sam_local);
    Ok(())
}

/// The HTTP API and the map on 127.0.0.1, with a new local issuer whose key
/// `geotag token` signs with.
async fn start_api(local: &LocalStack, invoker: Invoker, port: u16) -> Result<LocalApi> {
    let state = local.root.join(geotag_local_api::issuer::STATE_DIR);
    let routes = Gateway::routes_of(&local.stack);
    anyhow::ensure!(
        !routes.is_empty(),
        "template.yaml declares no HttpApi event"
    );
    let issuer = Arc::new(LocalIssuer::generate(
        geotag_local_api::issuer::LOCAL_ISSUER,
    )?);
    let api = LocalApi::start_on(
        Gateway {
            routes,
            invoker,
            issuer: Arc::clone(&issuer),
            allowed_origins: vec!["*".into()],
            site: Some(local.root.join(geotag_local_api::site::SITE_DIR)),
        },
        port,
    )
    .await?;
    issuer.save(&state)?;
    Ok(api)
}

/// The functions' environment files `geotag up` wrote.
struct Written {
    env_file: PathBuf,
    sam_env_vars: PathBuf,
}

fn print_up(local: &LocalStack, iot: &LocalIot, api: &LocalApi, written: &Written, remote: bool) {
    let env_file = &written.env_file;
    let endpoint = local.emulator.endpoint();
    println!("geotag up: the local stack is running (Ctrl-C stops it)\n");
    println!("  emulator   {endpoint}");
    println!(
        "  HTTP API   {}/v1 (tokens: cargo run -q -p geotag-cli -- token --customer acme)",
        api.url()
    );
    println!("  live map   {}/", api.url());
    println!(
        "  IoT Core   {} (MQTT 3.1.1 over mutual TLS; CA {}/ca.pem)",
        iot.broker.endpoint(),
        iot.state_dir.display()
    );
    for (logical_id, kind) in &local.stack.created {
        if let Ok(reference) = local.stack.reference(logical_id) {
            println!("  {logical_id:<22} {kind:<28} {reference}");
        }
    }
    for (logical_id, kind, why) in &local.stack.not_emulated {
        println!("  {logical_id:<22} {kind:<28} not emulated: {why}");
    }
    println!(
        "\n  the pump runs {}",
        if remote {
            "each invocation through the Lambda Invoke API"
        } else {
            "the handlers in-process"
        }
    );
    println!(
        "\n  run the functions under cargo lambda instead (restart with --invoke-endpoint http://127.0.0.1:9000):"
    );
    println!(
        "    cargo lambda watch --invoke-address 127.0.0.1 --env-file {}",
        env_file.display()
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 ingest --data-file events/ingest/valid-batch.json"
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 stats --data-file events/stats/inserts.json"
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 alerts --data-file events/alerts/latest-changes.json"
    );
    println!(
        "\n  or under sam local, in SAM's own containers (after sam build; on Linux, DOCKER_HOST from `geotag sam-docker`;"
    );
    println!("  SAM takes region and credentials from its shell, not from --env-vars):");
    println!(
        "    export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
    );
    let sam_env_vars = written.sam_env_vars.display();
    for (function, event) in [
        ("IngestFunction", "events/ingest/valid-batch.json"),
        ("StatsFunction", "events/stats/inserts.json"),
        ("AlertsFunction", "events/alerts/latest-changes.json"),
    ] {
        println!(
            "    sam local invoke {function} --event {event} --env-vars {sam_env_vars} --skip-pull-image"
        );
    }
    println!(
        "    sam local start-lambda --host 127.0.0.1 --port 3001 --env-vars {sam_env_vars} --skip-pull-image --warm-containers EAGER"
    );
    println!(
        "      (for the pump to send every batch there: start geotag up with --invoke-endpoint http://127.0.0.1:3001,\n       then start-lambda with the file it writes; or geotag up --sam-local, which starts it)"
    );
    println!("\n  the AWS CLI against it:");
    println!(
        "    export AWS_ENDPOINT_URL={endpoint} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
    );
    println!("\n  a tag of your own, over MQTT as a real tag connects:");
    println!(
        "    cargo run -p geotag-cli -- device provision tag-1 --customer acme --endpoint {endpoint}"
    );
    let devices = iot.state_dir.join("devices/tag-1");
    println!(
        "    mosquitto_pub -h 127.0.0.1 -p {} --cafile {}/ca.pem --cert {}/certificate.pem --key {}/private.key \\\n      -i tag-1 -t geotag/tag-1/telemetry -q 1 -m '{{\"ts\":'$(date +%s000)',\"lat\":48.8566,\"lon\":2.3522}}'",
        iot.broker.port(),
        iot.state_dir.display(),
        devices.display(),
        devices.display(),
    );
    if let Ok(table) = local.stack.reference("TelemetryTable") {
        println!("    aws dynamodb scan --table-name {table}");
    }
    println!("\n  a customer's fleet through the API:");
    println!("    TOKEN=$(cargo run -q -p geotag-cli -- token --customer acme)");
    println!(
        "    curl -s -H \"Authorization: Bearer $TOKEN\" {}/v1/devices",
        api.url()
    );
    println!("\n  a simulated fleet: cargo run -p geotag-cli -- simulate --endpoint {endpoint}");
    println!(
        "  the map:           cargo run -p geotag-cli -- report --html target/geotag/fleet.html --endpoint {endpoint}"
    );
}
