//! The HTML map, opened in headless Chromium (Debian's `chromium`, installed
//! by scripts/setup): the script inside the page must draw every simulated
//! device's track, every alert that has a position, the geofences and the
//! stats table, without a network.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use geotag_local_cloud::stack::Options;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's DOM after its scripts ran, as Chromium serialises it.
fn rendered_dom(page: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/setup installs Debian's chromium package"
    );
    let profile = tempfile::tempdir().unwrap();
    // The flags keep Chromium off the network entirely (this machine has none
    // but the package registries), which is also what the page promises.
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
            "--blink-settings=imagesEnabled=false",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn the_map_draws_every_device_and_every_alert_in_chromium() {
    let devices = 6;
    let fleet = geotag_simulation::simulate::FleetConfig {
        devices,
        readings_per_device: 20,
        interval_secs: 60,
        bad_ratio: 0.05,
        dup_ratio: 0.05,
        seed: 5,
        end_ms: geotag::clock::now_ms(),
        readings_per_message: None,
        flood: None,
    };
    let output = tempfile::tempdir().unwrap();
    let summary = geotag_simulation::demo::run(geotag_simulation::demo::DemoOptions {
        stack: Options::default(),
        fleet,
        invoker: None,
        launch: None,
        time_scale: 1.0,
        drain_timeout: Duration::from_secs(120),
        chaos: None,
        device_rows: false,
        output_dir: Some(output.path().to_owned()),
        via: Default::default(),
        publish_speedup: None,
        stepped: None,
    })
    .await
    .expect("the demo runs");
    assert!(summary.ok, "{summary:?}");
    let page = summary.report.expect("the demo writes the map");
    assert_eq!(page, output.path().join("report.html"));

    let html = std::fs::read_to_string(&page).unwrap();
    let data: serde_json::Value = {
        let start = html
            .find(r#"<script type="application/json" id="geotag-snapshot">"#)
            .unwrap();
        let json = &html[start..];
        let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
        serde_json::from_str(json).unwrap()
    };
    let alerts = data["alerts"].as_array().unwrap();
    let placed = alerts
        .iter()
        .filter(|alert| alert["lat"].is_number())
        .count();
    assert!(placed > 0, "the demo's fleet raises alerts: {alerts:?}");
    assert_eq!(placed, alerts.len(), "every alert is placed on its track");

    let dom = rendered_dom(&page);
    assert!(
        dom.contains(&format!(
            r#"data-rendered="{devices} devices, {} alerts""#,
            alerts.len()
        )),
        "the page's script did not finish: {}",
        &dom[..dom.len().min(2000)]
    );
    for index in 0..devices {
        let device = format!("tag-{index:04}");
        let row = format!(r#"<tr data-device="{device}">"#);
        assert_eq!(count(&dom, &row), 1, "one stats row for {device}");
        let drawn = dom
            .split("<polyline ")
            .skip(1)
            .any(|element| element.contains(&format!(r#"data-track="{device}""#)));
        assert!(drawn, "{device}'s track is drawn");
    }
    assert_eq!(count(&dom, "<polyline "), devices, "one track per device");
    assert_eq!(
        dom.split("<path ")
            .skip(1)
            .filter(|element| element.split('>').next().unwrap().contains("data-alert="))
            .count(),
        placed,
        "one marker per alert"
    );
    assert_eq!(
        count(&dom, "data-zone="),
        data["geofences"].as_array().unwrap().len()
    );
    assert!(!data["geofences"].as_array().unwrap().is_empty());
}
