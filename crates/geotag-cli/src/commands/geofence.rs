//! `geotag geofence add|list|remove`, and the `--circle` / `--polygon` syntax.

use anyhow::{Context as _, Result, bail};
use geotag::geofence::{Geofence, Shape};

use crate::args::{GeofenceAction, TargetArgs};

pub async fn run(action: GeofenceAction, target: TargetArgs) -> Result<()> {
    let admin = target.admin().await?;
    match action {
        GeofenceAction::Add {
            id,
            name,
            customer,
            circle,
            polygon,
        } => {
            let geofence = Geofence {
                shape: shape_of(circle.as_deref(), polygon.as_deref())?,
                id,
                name,
                customer_id: customer,
            };
            admin.put_geofence(&geofence).await?;
            println!("geofence {} saved", geofence.id);
        }
        GeofenceAction::List => {
            for zone in admin.list_geofences().await? {
                println!(
                    "{:<16} {:<12} {:<28} {}",
                    zone.id,
                    zone.customer_id.as_deref().unwrap_or("(every tag)"),
                    zone.name,
                    describe(&zone.shape)
                );
            }
        }
        GeofenceAction::Remove { id, customer } => {
            if !admin.remove_geofence(customer.as_deref(), &id).await? {
                bail!("no geofence {id} in that scope");
            }
            println!("geofence {id} removed");
        }
    }
    Ok(())
}

fn describe(shape: &Shape) -> String {
    match shape {
        Shape::Circle { lat, lon, radius_m } => format!("circle {radius_m} m around {lat}, {lon}"),
        Shape::Polygon { ring } => format!("polygon of {} vertices", ring.len()),
    }
}

fn numbers(text: &str, what: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .with_context(|| format!("{what}: {part:?} is not a number"))
        })
        .collect()
}

fn shape_of(circle: Option<&str>, polygon: Option<&str>) -> Result<Shape> {
    if let Some(circle) = circle {
        let [lat, lon, radius_m] = numbers(circle, "--circle")?[..] else {
            bail!("--circle takes LAT,LON,RADIUS_M");
        };
        return Ok(Shape::Circle { lat, lon, radius_m });
    }
    let polygon = polygon.context("--circle or --polygon")?;
    let ring = polygon
        .split(';')
        .filter(|vertex| !vertex.trim().is_empty())
        .map(|vertex| match numbers(vertex, "--polygon")?[..] {
            [lat, lon] => Ok((lat, lon)),
            _ => bail!("--polygon vertex {vertex:?} is not LAT,LON"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Shape::Polygon { ring })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_circles_and_polygons() {
        assert_eq!(
            shape_of(Some("48.86, 2.34,500"), None).unwrap(),
            Shape::Circle {
                lat: 48.86,
                lon: 2.34,
                radius_m: 500.0
            }
        );
        assert_eq!(
            shape_of(None, Some("1,2;3,4;5,6;")).unwrap(),
            Shape::Polygon {
                ring: vec![(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
            }
        );
        let error = shape_of(Some("1,2"), None).unwrap_err().to_string();
        assert!(error.contains("LAT,LON,RADIUS_M"), "{error}");
        let error = format!("{:#}", shape_of(None, Some("1,x;3,4")).unwrap_err());
        assert!(error.contains("\"x\" is not a number"), "{error}");
    }
}
