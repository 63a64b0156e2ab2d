//! A DynamoDB stream event, as the stats and alerts functions receive it: JSON
//! in, Telemetry readings out (stats), and latest-state images with their
//! trails judged by the alert rules (alerts, with in-memory registry, log and
//! topic holding a circle and a polygon zone). No input may panic.
#![no_main]

use std::sync::OnceLock;

use geotag::geofence::{Geofence, Shape};
use geotag::store::{MemoryAlerts, MemoryRegistry, MemorySilenceIndex};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn alerts() -> geotag_alerts::Alerts<MemoryRegistry, MemoryAlerts, MemoryAlerts, MemorySilenceIndex> {
    let registry = MemoryRegistry::default();
    registry.geofences.lock().unwrap().extend([
        Geofence {
            id: "depot".into(),
            name: "Depot".into(),
            customer_id: None,
            shape: Shape::Circle { lat: 48.86, lon: 2.34, radius_m: 500.0 },
        },
        Geofence {
            id: "fiji".into(),
            name: "Across the antimeridian".into(),
            customer_id: None,
            shape: Shape::Polygon {
                ring: vec![(-16.0, 179.0), (-16.0, -179.0), (-18.0, -179.0), (-18.0, 179.0)],
            },
        },
    ]);
    geotag_alerts::Alerts {
        registry,
        log: MemoryAlerts::default(),
        sink: MemoryAlerts::default(),
        silence: MemorySilenceIndex::default(),
        silence_lookback_ms: 86_400_000,
        metrics: geotag_runtime::emf::Emitter::for_binary("alerts").with_sink(geotag_runtime::emf::Sink::Discard),
    }
}

fuzz_target!(|data: &[u8]| {
    // The functions' typed images first: each must read or refuse, not panic.
    if let Ok(event) = serde_json::from_slice::<geotag_aws::telemetry::TelemetryStreamEvent>(data) {
        for record in &event.records {
            let _ = geotag_stats::reading_of(record);
        }
    }
    let Ok(event) = serde_json::from_slice::<geotag_aws::device_stats::DeviceStatsStreamEvent>(data) else {
        // Whatever the alerts' trigger parser makes of it, it must not panic.
        let _ = serde_json::from_slice::<geotag_alerts::Trigger>(data);
        return;
    };
    let alerts = alerts();
    runtime().block_on(async {
        let _ = geotag_alerts::process_stream(&alerts, &event.records).await;
    });
});
