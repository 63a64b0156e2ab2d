//! The read side, audited after the run: each customer asks the API function
//! (in-process, with the payload v2 event API Gateway sends once its JWT
//! authorizer verified a token) for its fleet, and must get exactly its own
//! tags, each where DeviceStats has it; another customer's tag must answer
//! what an unknown one does; a token naming no customer is refused.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result, anyhow};
use geotag_api::payload::{self, Incoming};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::stack::LocalStack;
use serde_json::{Map, Value, json};

use crate::alert_audit::FleetRegistry;
use crate::reading_audit::Audit;

/// One answer of the API function: its status and its body, parsed.
struct Answer {
    status: u64,
    body: Value,
}

async fn get(
    local: &LocalStack,
    invoker: &Invoker,
    path: &str,
    raw_query: &str,
    claims: &Map<String, Value>,
) -> Result<Answer> {
    let incoming = Incoming {
        method: "GET",
        path,
        raw_query,
        ..Incoming::default()
    };
    let answer = invoker
        .invoke(
            local.stack.function("ApiFunction")?,
            payload::event(&incoming, Some(claims)),
        )
        .await
        .with_context(|| format!("GET {path}?{raw_query}"))?;
    let status = answer["statusCode"]
        .as_u64()
        .ok_or_else(|| anyhow!("GET {path}: no statusCode in {answer}"))?;
    let body = serde_json::from_str(answer["body"].as_str().unwrap_or("null"))
        .with_context(|| format!("GET {path}: the body is not JSON"))?;
    Ok(Answer { status, body })
}

fn customer(id: &str) -> Map<String, Value> {
    let claims = json!({"sub": format!("demo-{id}"), "customer_id": id});
    claims.as_object().cloned().unwrap_or_default()
}

/// Every tag `customer_id` lists, with its position `[lon, lat]`.
async fn listed(
    local: &LocalStack,
    invoker: &Invoker,
    customer_id: &str,
) -> Result<BTreeMap<String, Value>> {
    let mut tags = BTreeMap::new();
    let mut query = "limit=100".to_owned();
    loop {
        let page = get(
            local,
            invoker,
            "/v1/devices",
            &query,
            &customer(customer_id),
        )
        .await?;
        anyhow::ensure!(
            page.status == 200,
            "{customer_id}'s listing: {} {}",
            page.status,
            page.body
        );
        for feature in page.body["features"].as_array().into_iter().flatten() {
            let id = feature["id"].as_str().unwrap_or_default().to_owned();
            tags.insert(id, feature["geometry"]["coordinates"].clone());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=100&cursor={cursor}"),
            None => return Ok(tags),
        }
    }
}

/// Runs the read-side audit; returns its line and whether it passed.
pub async fn audit(
    local: &LocalStack,
    invoker: &Invoker,
    registry: &FleetRegistry,
    readings: &Audit,
) -> Result<(String, bool)> {
    let stats = readings.device_stats.clone().unwrap_or_default();
    let customers: BTreeSet<&str> = registry.customer_of.values().map(String::as_str).collect();
    let mut ok = true;
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for &customer_id in &customers {
        let expected: BTreeSet<&str> = (registry.customer_of.iter())
            .filter(|(device, owner)| {
                *owner == customer_id && stats.get(*device).is_some_and(|s| s.latest_ms.is_some())
            })
            .map(|(device, _)| device.as_str())
            .collect();
        let tags = listed(local, invoker, customer_id).await?;
        let got: BTreeSet<&str> = tags.keys().map(String::as_str).collect();
        if got != expected {
            ok = false;
            problems.push(format!(
                "{customer_id} listed {got:?}, its tags with readings are {expected:?}"
            ));
        }
        for (device, coordinates) in &tags {
            let stored = stats.get(device).and_then(|s| s.latest_position);
            let answered = coordinates
                .as_array()
                .and_then(|pair| Some((pair.get(1)?.as_f64()?, pair.first()?.as_f64()?)));
            if stored != answered {
                ok = false;
                problems.push(format!(
                    "{device} answered at {answered:?}, DeviceStats has {stored:?}"
                ));
            }
        }
        seen.push(format!("{customer_id} its {}", tags.len()));
    }

    // A tag that is not theirs (another customer's, or nobody's yet) and a
    // tag that does not exist: the same answer.
    let first = customers.first().copied();
    let foreign = stats
        .keys()
        .find(|device| registry.customer_of.get(*device).map(String::as_str) != first)
        .cloned();
    if let (Some(first), Some(foreign)) = (first, foreign.as_deref()) {
        let theirs = get(
            local,
            invoker,
            &format!("/v1/devices/{foreign}"),
            "",
            &customer(first),
        )
        .await?;
        let nobodys = get(
            local,
            invoker,
            "/v1/devices/tag-nobody",
            "",
            &customer(first),
        )
        .await?;
        if (theirs.status, &theirs.body) != (404, &nobodys.body) || nobodys.status != 404 {
            ok = false;
            problems.push(format!(
                "{first} asking for {foreign}: {} {}; for an unknown tag: {} {}",
                theirs.status, theirs.body, nobodys.status, nobodys.body
            ));
        }
    }
    let anonymous = json!({"sub": "demo-nobody"});
    let refused = get(
        local,
        invoker,
        "/v1/devices",
        "",
        anonymous.as_object().unwrap_or(&Map::new()),
    )
    .await?;
    if refused.status != 403 || refused.body["code"] != "token_names_no_customer" {
        ok = false;
        problems.push(format!(
            "a token naming no customer: {} {}",
            refused.status, refused.body
        ));
    }
    let line = format!(
        "  api         GET /v1/devices as each customer: {} tags, each where DeviceStats has it; \
         {} answers {} 404 as an unknown tag does; a token naming no customer is refused \
         (403) {}{}",
        seen.join(", "),
        foreign.as_deref().unwrap_or("no tag outside its fleet"),
        first.unwrap_or("no customer"),
        if ok { "✓" } else { "✗" },
        problems
            .iter()
            .map(|problem| format!("\n    {problem}"))
            .collect::<String>()
    );
    Ok((line, ok))
}
