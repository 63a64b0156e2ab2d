//! The live map in headless Chromium (Debian's `chromium`, installed by
//! scripts/setup), served by the local API beside the pipeline: two
//! customers' pages each draw their own tags and no other's, on the offline
//! base map, and a reading published while a page is open moves its tag.
//!
//! Chromium runs on virtual time (`--virtual-time-budget`): the page's
//! polling timers fire as fast as the answers come, and time stands still
//! while a request is pending. The reading is published while the page's
//! second poll of the fleet waits for its answer: through SNS, ingest and
//! stats (the pump, in-process), before the answer is given.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use geotag_local_api::{Gateway, LocalApi, LocalIssuer, Subject};
use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::pump::Pump;
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_simulation::simulate::{Message, publish};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's DOM once its scripts have run for `budget_ms` of virtual time.
fn rendered_dom(url: &str, budget_ms: u32) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/setup installs Debian's chromium package"
    );
    let profile =
        std::env::temp_dir().join(format!("geotag-map-{}-{budget_ms}", std::process::id()));
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn reading(thing: &str, ts_ms: i64, lat: f64, lon: f64) -> Message {
    Message {
        thing: thing.into(),
        payload: format!(r#"{{"ts":{ts_ms},"lat":{lat},"lon":{lon},"speed":4.5,"battery":80}}"#),
        expected_rejection: None,
        send_ms: ts_ms,
    }
}

/// The `data-lat` of a tag's marker in a DOM dump.
fn marker_lat(dom: &str, tag: &str) -> Option<f64> {
    let start = dom.find(&format!("data-device=\"{tag}\""))?;
    let rest = &dom[start..];
    let lat = rest.split("data-lat=\"").nth(1)?.split('"').next()?;
    lat.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customer_sees_its_own_tags_move_on_the_map() {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    let topic = local.stack.reference("TelemetryTopic").unwrap().to_owned();
    let devices = local.stack.reference("DevicesTable").unwrap().to_owned();
    for (tag, customer) in [("tag-a1", "acme"), ("tag-a2", "acme"), ("tag-g1", "globex")] {
        dynamodb
            .put_item()
            .table_name(&devices)
            .set_item(Some(geotag_aws::registry::device_item(tag, customer)))
            .send()
            .await
            .unwrap();
    }
    let in_process = Invoker::InProcess(Arc::new(
        InProcess::for_stack(&local.stack, &local.sdk).unwrap(),
    ));
    let pump = Arc::new(Pump::start(&local.stack, &local.sdk, in_process.clone()));
    let now = geotag::clock::now_ms();
    let first: Vec<Message> = [
        ("tag-a1", 48.8566, 2.3522),
        ("tag-a2", 48.8700, 2.3000),
        ("tag-g1", 48.8400, 2.4000),
    ]
    .iter()
    .flat_map(|(tag, lat, lon)| {
        (0..3).map(move |i| {
            reading(
                tag,
                now - 300_000 + i * 60_000,
                lat + i as f64 * 0.001,
                *lon,
            )
        })
    })
    .collect();
    publish(&sns, &topic, &first, false, None).await.unwrap();
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();

    // The API's invocations, with a hook: acme's second look at its fleet
    // waits while a new reading of tag-a1 goes through the pipeline.
    let acme_polls = Arc::new(AtomicUsize::new(0));
    let moved_lat = 48.9100;
    let hook = {
        let (in_process, acme_polls, sns, topic, pump) = (
            in_process.clone(),
            Arc::clone(&acme_polls),
            sns.clone(),
            topic.clone(),
            Arc::clone(&pump),
        );
        Invoker::Closure(Arc::new(move |function, event| {
            let (in_process, acme_polls, sns, topic, pump) = (
                in_process.clone(),
                Arc::clone(&acme_polls),
                sns.clone(),
                topic.clone(),
                Arc::clone(&pump),
            );
            let function = function.clone();
            async move {
                let fleet_request = event["rawPath"] == "/v1/devices";
                let acme = event["requestContext"]["authorizer"]["jwt"]["claims"]["cognito:groups"]
                    == "[customer:acme]";
                if fleet_request && acme && acme_polls.fetch_add(1, Ordering::SeqCst) == 1 {
                    let moved =
                        reading("tag-a1", geotag::clock::now_ms() - 1_000, moved_lat, 2.3600);
                    publish(&sns, &topic, &[moved], false, None).await?;
                    pump.wait_drained(Duration::from_secs(60)).await?;
                }
                in_process.invoke(&function, event).await
            }
            .boxed()
        }))
    };
    let issuer = Arc::new(LocalIssuer::generate(geotag_local_api::issuer::LOCAL_ISSUER).unwrap());
    let api = LocalApi::start(Gateway {
        routes: Gateway::routes_of(&local.stack),
        invoker: hook,
        issuer: Arc::clone(&issuer),
        allowed_origins: vec!["*".into()],
        site: Some(local.root.join(geotag_local_api::site::SITE_DIR)),
    })
    .await
    .unwrap();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |customer: &str| {
        issuer
            .token(
                &Subject::Customer(customer.into()),
                Duration::from_secs(600),
                now_secs,
            )
            .unwrap()
    };

    let globex = tokio::task::spawn_blocking({
        let url = format!("{}/#token={}&poll=1000", api.url(), token("globex"));
        move || rendered_dom(&url, 8_000)
    })
    .await
    .unwrap();
    assert!(
        globex.contains("data-device=\"tag-g1\""),
        "globex's tag is drawn"
    );
    assert!(
        !globex.contains("tag-a1") && !globex.contains("tag-a2"),
        "globex sees none of acme's tags"
    );
    assert!(globex.contains("data-track=\"tag-g1\""), "with its track");
    assert!(
        globex.contains("data-country=\"France\""),
        "on the offline base map"
    );

    let acme = tokio::task::spawn_blocking({
        let url = format!("{}/#token={}&poll=1000", api.url(), token("acme"));
        move || rendered_dom(&url, 8_000)
    })
    .await
    .unwrap();
    assert!(
        acme_polls.load(Ordering::SeqCst) >= 3,
        "the page kept polling"
    );
    assert!(acme.contains("data-device=\"tag-a1\"") && acme.contains("data-device=\"tag-a2\""));
    assert!(!acme.contains("tag-g1"), "acme sees none of globex's tags");
    assert_eq!(
        marker_lat(&acme, "tag-a1"),
        Some(moved_lat),
        "tag-a1 moved to its new reading"
    );
    assert!(
        acme.contains("data-moves=\"1\""),
        "the page saw it move once"
    );
    assert_eq!(marker_lat(&acme, "tag-a2"), Some(48.872), "tag-a2 stayed");
    api.stop().await;
    if let Ok(pump) = Arc::try_unwrap(pump) {
        pump.stop().await;
    }
}
