//! The device registry on DynamoDB: which customer owns a tag, each
//! customer's thresholds, and the geofences. Three small tables, each read
//! with the fewest requests an alerts batch allows:
//!
//! | table | key | holds |
//! |---|---|---|
//! | Devices | `device_id` | `customer_id` |
//! | Customers | `customer_id` | `email`, and any of `battery_low_pct`, `speed_limit_mps`, `speed_grace_s`, `silence_after_s` (missing: the default) |
//! | Geofences | `scope` (a customer id, or `*` for every tag), `geofence_id` | `name`, `shape` (`circle` or `polygon`), `lat`/`lon`/`radius_m` or `ring` ([[lat, lon], ...]) |
//!
//! An alerts batch costs one BatchGetItem on Devices (per 100 devices), one
//! on Customers, and one Query on Geofences per scope it touches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use geotag::alerts::{ThresholdField, Thresholds};
use geotag::geofence::{Geofence, Shape};
use geotag::store::{Assignment, DeviceDirectory, Registry, StoreError};

use crate::batch_get::{batch_get, scan_all, string_key};
use crate::telemetry::store_error;

pub use geotag::geofence::GLOBAL_SCOPE;
pub use geotag::tenancy::UNASSIGNED;

#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    devices_table: String,
    customers_table: String,
    geofences_table: String,
    defaults: Thresholds,
}

impl DynamoRegistry {
    pub fn new(
        client: Client,
        devices_table: impl Into<String>,
        customers_table: impl Into<String>,
        geofences_table: impl Into<String>,
        defaults: Thresholds,
    ) -> Self {
        DynamoRegistry {
            client,
            devices_table: devices_table.into(),
            customers_table: customers_table.into(),
            geofences_table: geofences_table.into(),
            defaults,
        }
    }

    /// Items of `table` with these values of its hash key `key`.
    async fn batch_get(
        &self,
        table: &str,
        key: &str,
        values: &[String],
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let keys = values
            .iter()
            .map(|value| string_key(key, value.clone()))
            .collect();
        batch_get(&self.client, table, keys).await
    }

    /// The geofences of one scope (a customer id, or [`GLOBAL_SCOPE`]).
    pub async fn geofences(&self, scope: &str) -> Result<Vec<Geofence>, StoreError> {
        let mut geofences = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.geofences_table)
                .key_condition_expression("#scope = :scope")
                .expression_attribute_names("#scope", "scope")
                .expression_attribute_values(":scope", AttributeValue::S(scope.to_owned()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            for item in output.items() {
                match geofence_from(item) {
                    Some(geofence) => geofences.push(geofence),
                    None => tracing::error!(?item, "a Geofences item that does not parse; ignored"),
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(geofences);
            }
        }
    }
}

impl Registry for DynamoRegistry {
    async fn assignments(
        &self,
        devices: &[String],
    ) -> Result<HashMap<String, Assignment>, StoreError> {
        let customer_of: HashMap<String, String> = self
            .batch_get(&self.devices_table, "device_id", devices)
            .await?
            .iter()
            .filter_map(device_from)
            .collect();
        let customers: Vec<String> = customer_of
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let thresholds_of: HashMap<String, Thresholds> = self
            .batch_get(&self.customers_table, "customer_id", &customers)
            .await?
            .iter()
            .filter_map(|item| {
                Some((
                    item.get("customer_id")?.as_s().ok()?.clone(),
                    thresholds_from(item, self.defaults),
                ))
            })
            .collect();
        let global = self.geofences(GLOBAL_SCOPE).await?;
        let mut zones_of: HashMap<String, Vec<Geofence>> = HashMap::new();
        for customer in &customers {
            zones_of.insert(customer.clone(), self.geofences(customer).await?);
        }
        Ok(devices
            .iter()
            .map(|device| {
                let customer_id = customer_of.get(device).cloned();
                let mut geofences = global.clone();
                if let Some(own) = customer_id.as_ref().and_then(|c| zones_of.get(c)) {
                    geofences.extend(own.iter().cloned());
                }
                let thresholds = customer_id
                    .as_ref()
                    .and_then(|c| thresholds_of.get(c))
                    .copied()
                    .unwrap_or(self.defaults);
                (
                    device.clone(),
                    Assignment {
                        customer_id,
                        thresholds,
                        geofences,
                    },
                )
            })
            .collect())
    }

    async fn all_thresholds(&self) -> Result<Vec<Thresholds>, StoreError> {
        // Customers are few (hundreds), so a Scan of their table is a page or two.
        let mut all = vec![self.defaults];
        all.extend(
            scan_all(&self.client, &self.customers_table, false)
                .await?
                .iter()
                .map(|item| thresholds_from(item, self.defaults)),
        );
        Ok(all)
    }
}

/// How long ingest trusts what it found in Devices. A warm function then
/// reads Devices about once per tag in this time, not once per batch. It is
/// also how late a change reaches the readings: a tag removed from the
/// registry is refused at most this late (revoking its certificate stops it
/// at the broker at once), and a tag passed to another customer may store
/// up to this long of readings for its former owner. Pass a tag on while it
/// is offline (at the depot), or revoke and provision it anew.
pub const REGISTERED_FOR: Duration = Duration::from_secs(300);

/// The Devices table as ingest asks it: is this tag registered, and whose is
/// it? Tags found are remembered for [`REGISTERED_FOR`]; tags not found are
/// asked again every time, so that a tag provisioned a moment ago is
/// admitted at once.
#[derive(Debug)]
pub struct DynamoDevices {
    client: Client,
    table: String,
    found: Mutex<HashMap<String, (String, Instant)>>,
}

impl DynamoDevices {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDevices {
            client,
            table: table.into(),
            found: Mutex::new(HashMap::new()),
        }
    }

    fn remembered(&self, device_ids: &[String]) -> (HashMap<String, String>, Vec<String>) {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let mut known = HashMap::new();
        let mut ask = Vec::new();
        for id in device_ids {
            match found.get(id) {
                Some((owner, at)) if at.elapsed() < REGISTERED_FOR => {
                    known.insert(id.clone(), owner.clone());
                }
                _ if !ask.contains(id) => ask.push(id.clone()),
                _ => {}
            }
        }
        (known, ask)
    }
}

impl DeviceDirectory for DynamoDevices {
    async fn owners(&self, device_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let (mut known, ask) = self.remembered(device_ids);
        if ask.is_empty() {
            return Ok(known);
        }
        let keys = ask
            .into_iter()
            .map(|id| string_key("device_id", id))
            .collect();
        let found: Vec<(String, String)> = batch_get(&self.client, &self.table, keys)
            .await?
            .iter()
            .filter_map(|item| {
                Some((
                    item.get("device_id")?.as_s().ok()?.clone(),
                    item.get("customer_id")?.as_s().ok()?.clone(),
                ))
            })
            .collect();
        let now = Instant::now();
        let mut remembered = self.found.lock().unwrap_or_else(|p| p.into_inner());
        for (id, owner) in found {
            remembered.insert(id.clone(), (owner.clone(), now));
            known.insert(id, owner);
        }
        Ok(known)
    }
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<f64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The Devices item assigning a tag to a customer.
pub fn device_item(device_id: &str, customer_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "device_id".to_owned(),
            AttributeValue::S(device_id.to_owned()),
        ),
        (
            "customer_id".to_owned(),
            AttributeValue::S(customer_id.to_owned()),
        ),
    ])
}

/// (device, customer) of a Devices item; `None` if it is not one.
pub fn device_from(item: &HashMap<String, AttributeValue>) -> Option<(String, String)> {
    Some((
        item.get("device_id")?.as_s().ok()?.clone(),
        item.get("customer_id")?.as_s().ok()?.clone(),
    ))
}

/// A customer's thresholds: its own where set, the defaults elsewhere. A
/// stored value out of its range (written around `geotag customer add`, by
/// hand or by an older tool) is not used: the default applies to that field
/// and the refusal is logged with its reason, the customer and the field.
pub fn thresholds_from(item: &HashMap<String, AttributeValue>, defaults: Thresholds) -> Thresholds {
    // Each field in the unit operators set it in, as ThresholdField checks it.
    let own = |field: ThresholdField, stored_name: &str, to_operator_unit: fn(f64) -> f64| {
        let stored = item.get(stored_name)?;
        let checked = stored
            .as_n()
            .ok()
            .and_then(|n| n.parse::<f64>().ok())
            .map(to_operator_unit)
            .ok_or_else(|| format!("{stored_name} is not a number"))
            .and_then(|value| field.check(value).map_err(|e| e.to_string()));
        match checked {
            Ok(value) => Some(value),
            Err(problem) => {
                let customer = item.get("customer_id").and_then(|v| v.as_s().ok());
                tracing::warn!(
                    reason = "invalid_threshold",
                    field = field.name(),
                    customer,
                    problem,
                    "a Customers threshold out of range; the default applies"
                );
                None
            }
        }
    };
    Thresholds {
        battery_low_pct: own(ThresholdField::BatteryLowPct, "battery_low_pct", |pct| pct)
            .unwrap_or(defaults.battery_low_pct),
        speed_limit_mps: own(ThresholdField::SpeedLimitKmh, "speed_limit_mps", |mps| {
            mps * 3.6
        })
        .map_or(defaults.speed_limit_mps, |kmh| kmh / 3.6),
        speed_grace_ms: own(ThresholdField::SpeedGraceSeconds, "speed_grace_s", |s| s)
            .map_or(defaults.speed_grace_ms, |s| (s * 1000.0) as i64),
        silence_after_ms: own(ThresholdField::SilenceMinutes, "silence_after_s", |s| {
            s / 60.0
        })
        .map_or(defaults.silence_after_ms, |minutes| {
            (minutes * 60_000.0) as i64
        }),
    }
}

/// The threshold attributes of a Customers item, for those that are set.
pub fn threshold_attributes(
    battery_low_pct: Option<f64>,
    speed_limit_mps: Option<f64>,
    speed_grace_s: Option<f64>,
    silence_after_s: Option<f64>,
) -> HashMap<String, AttributeValue> {
    [
        ("battery_low_pct", battery_low_pct),
        ("speed_limit_mps", speed_limit_mps),
        ("speed_grace_s", speed_grace_s),
        ("silence_after_s", silence_after_s),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), n(value?))))
    .collect()
}

/// The Geofences item of a geofence: the one place a zone becomes attributes.
pub fn geofence_item(geofence: &Geofence) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (
            "scope".to_owned(),
            AttributeValue::S(geofence.scope().to_owned()),
        ),
        (
            "geofence_id".to_owned(),
            AttributeValue::S(geofence.id.clone()),
        ),
        ("name".to_owned(), AttributeValue::S(geofence.name.clone())),
    ]);
    match &geofence.shape {
        Shape::Circle { lat, lon, radius_m } => {
            item.insert("shape".into(), AttributeValue::S("circle".into()));
            item.insert("lat".into(), n(lat));
            item.insert("lon".into(), n(lon));
            item.insert("radius_m".into(), n(radius_m));
        }
        Shape::Polygon { ring } => {
            item.insert("shape".into(), AttributeValue::S("polygon".into()));
            item.insert(
                "ring".into(),
                AttributeValue::L(
                    ring.iter()
                        .map(|(lat, lon)| AttributeValue::L(vec![n(lat), n(lon)]))
                        .collect(),
                ),
            );
        }
    }
    item
}

/// Reads a Geofences item back; `None` if it is not one.
pub fn geofence_from(item: &HashMap<String, AttributeValue>) -> Option<Geofence> {
    let text = |name: &str| Some(item.get(name)?.as_s().ok()?.clone());
    let scope = text("scope")?;
    let shape = match text("shape")?.as_str() {
        "circle" => Shape::Circle {
            lat: number(item, "lat")?,
            lon: number(item, "lon")?,
            radius_m: number(item, "radius_m")?,
        },
        "polygon" => Shape::Polygon {
            ring: item
                .get("ring")?
                .as_l()
                .ok()?
                .iter()
                .map(|vertex| match vertex.as_l().ok()?.as_slice() {
                    [lat, lon] => Some((
                        lat.as_n().ok()?.parse().ok()?,
                        lon.as_n().ok()?.parse().ok()?,
                    )),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        },
        _ => return None,
    };
    let geofence = Geofence {
        id: text("geofence_id")?,
        name: text("name").unwrap_or_default(),
        customer_id: (scope != GLOBAL_SCOPE).then_some(scope),
        shape,
    };
    // A hand-edited item with a bad shape must not make a zone of everything.
    geofence.shape.problem().is_none().then_some(geofence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geofences_round_trip() {
        for geofence in [
            Geofence {
                id: "depot".into(),
                name: "Central depot".into(),
                customer_id: None,
                shape: Shape::Circle {
                    lat: 48.86,
                    lon: 2.34,
                    radius_m: 500.0,
                },
            },
            Geofence {
                id: "yard".into(),
                name: "Fiji yard".into(),
                customer_id: Some("acme".into()),
                shape: Shape::Polygon {
                    ring: vec![
                        (-16.0, 179.5),
                        (-16.0, -179.5),
                        (-17.0, -179.5),
                        (-17.0, 179.5),
                    ],
                },
            },
        ] {
            assert_eq!(geofence_from(&geofence_item(&geofence)), Some(geofence));
        }
        let mut bad = geofence_item(&Geofence {
            id: "x".into(),
            name: "x".into(),
            customer_id: None,
            shape: Shape::Circle {
                lat: 0.0,
                lon: 0.0,
                radius_m: 1.0,
            },
        });
        bad.insert("radius_m".into(), n(-5));
        assert_eq!(geofence_from(&bad), None);
    }

    #[test]
    fn device_assignments_round_trip() {
        let item = device_item("tag-0042", "acme");
        assert_eq!(
            device_from(&item),
            Some(("tag-0042".to_owned(), "acme".to_owned()))
        );
        assert_eq!(device_from(&HashMap::new()), None);
    }

    #[test]
    fn customer_thresholds_fall_back_to_the_defaults() {
        let defaults = Thresholds::default();
        let item = threshold_attributes(Some(30.0), None, Some(90.0), None);
        let thresholds = thresholds_from(&item, defaults);
        assert_eq!(thresholds.battery_low_pct, 30.0);
        assert_eq!(thresholds.speed_grace_ms, 90_000);
        assert_eq!(thresholds.speed_limit_mps, defaults.speed_limit_mps);
        assert_eq!(thresholds.silence_after_ms, defaults.silence_after_ms);
    }

    #[test]
    fn stored_thresholds_out_of_range_are_not_used() {
        let defaults = Thresholds::default();
        // A negative silence would alert every tag of the customer on the
        // next check; an enormous one overflowed the check's arithmetic.
        for (name, value) in [
            ("silence_after_s", "-60"),
            ("silence_after_s", "1e300"),
            ("battery_low_pct", "101"),
            ("speed_limit_mps", "0"),
            ("speed_grace_s", "NaN"),
        ] {
            let item = HashMap::from([(name.to_owned(), n(value))]);
            assert_eq!(thresholds_from(&item, defaults), defaults, "{name}={value}");
        }
        let item = HashMap::from([(
            "silence_after_s".to_owned(),
            AttributeValue::S("soon".into()),
        )]);
        assert_eq!(thresholds_from(&item, defaults), defaults);
        let item = threshold_attributes(Some(0.0), Some(1000.0 / 3.6), Some(86_400.0), Some(60.0));
        let thresholds = thresholds_from(&item, defaults);
        assert_eq!(thresholds.battery_low_pct, 0.0);
        assert_eq!(thresholds.speed_grace_ms, 86_400_000);
        assert_eq!(thresholds.silence_after_ms, 60_000);
        assert!((thresholds.speed_limit_mps * 3.6 - 1000.0).abs() < 1e-9);
    }
}
