// The live map: a customer's tags where they are, moving as readings land.
//
// It signs in with a bearer token (the fragment `#token=...`, which never
// reaches a server, or the form), reads the API the page came from (or
// `#api=URL`, for a deployed API), and polls `/v1/devices` every `#poll=`
// milliseconds (2000 by default) with `If-None-Match`, so an unchanged fleet
// costs a bodiless 304. A tag whose position changed gets its track read
// again. The base map is Natural Earth's countries (vendor/), drawn on an
// equirectangular projection fitted to the fleet: true to scale over the
// tens of kilometres a fleet covers, and nothing to download.
//
// Everything shown comes from the API, which answers with the token's
// customer's data only; the page decides nothing about who sees what.
//
// `geotag report --html` is this page with a snapshot inside it (a script
// element `geotag-snapshot`, the base map in `geotag-world`): it draws that
// and asks no server for anything.
"use strict";

const settings = new URLSearchParams(location.hash.slice(1));
const api = (settings.get("api") || location.origin).replace(/\/$/, "");
const pollMs = Math.max(200, Number(settings.get("poll")) || 2000);
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000, HEIGHT = 700;

let token = settings.get("token") || sessionStorage.getItem("geotag-token") || "";
if (settings.has("token")) {
  // Out of the address bar and the history; sessionStorage keeps it for this tab.
  settings.delete("token");
  history.replaceState(null, "", location.pathname + (settings.toString() ? `#${settings}` : ""));
}
const cache = new Map(); // path -> {etag, body}
const devices = new Map(); // id -> {feature, moves, trackVersion}
const tracks = new Map(); // id -> [[lon, lat, ms], ...]
let zones = [];
let alerts = [];
let view = null; // {lon0, lat0, scale, kx}
let world = null;

const $ = (id) => document.getElementById(id);
const el = (name, attrs = {}, parent = null) => {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
};

function status(text) { $("status").textContent = text; }

class SignedOut extends Error {}

// GET with the token and the last ETag of this path: 304 gives the cached body.
async function get(path) {
  const headers = { Authorization: `Bearer ${token}` };
  const cached = cache.get(path);
  if (cached) headers["If-None-Match"] = cached.etag;
  const response = await fetch(api + path, { headers, cache: "no-store" });
  if (response.status === 304 && cached) return { body: cached.body, changed: false };
  if (response.status === 401) throw new SignedOut(response.headers.get("www-authenticate") || "the token was refused");
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body.code || ""} ${body.detail || ""}`);
  const etag = response.headers.get("etag");
  if (etag) cache.set(path, { etag, body });
  return { body, changed: true };
}

// Every page of a listing, following `next_cursor`.
async function all(path, field) {
  let items = [], changed = false, next = path;
  for (let pages = 0; next && pages < 100; pages++) {
    const page = await get(next);
    changed = changed || page.changed;
    items = items.concat(page.body[field] || []);
    const cursor = page.body.next_cursor;
    next = cursor ? `${path}${path.includes("?") ? "&" : "?"}cursor=${encodeURIComponent(cursor)}` : null;
  }
  return { items, changed };
}

function fit(points) {
  if (points.length === 0) return null;
  let [west, east, south, north] = [180, -180, 90, -90];
  for (const [lon, lat] of points) {
    west = Math.min(west, lon); east = Math.max(east, lon);
    south = Math.min(south, lat); north = Math.max(north, lat);
  }
  // A margin, and at least ~2 km across, so a lone tag is not a whole screen.
  const padLon = Math.max((east - west) * 0.15, 0.02), padLat = Math.max((north - south) * 0.15, 0.02);
  west -= padLon; east += padLon; south -= padLat; north += padLat;
  const kx = Math.cos(((south + north) / 2) * Math.PI / 180);
  const scale = Math.min(WIDTH / ((east - west) * kx), HEIGHT / (north - south));
  return { lon0: (west + east) / 2, lat0: (south + north) / 2, scale, kx, west, east, south, north };
}

const x = (lon) => WIDTH / 2 + (lon - view.lon0) * view.kx * view.scale;
const y = (lat) => HEIGHT / 2 - (lat - view.lat0) * view.scale;
const inView = (lon, lat) => lon >= view.west && lon <= view.east && lat >= view.south && lat <= view.north;

function drawLand() {
  const land = $("land");
  land.replaceChildren();
  if (!world || !view) return;
  const countries = topojson.feature(world, world.objects.countries).features;
  const margin = 2; // degrees: coasts just outside the view still close their shapes
  for (const country of countries) {
    const polygons = country.geometry == null ? [] :
      country.geometry.type === "Polygon" ? [country.geometry.coordinates] : country.geometry.coordinates;
    for (const polygon of polygons) {
      const near = polygon[0].some(([lon, lat]) =>
        lon > view.west - margin && lon < view.east + margin && lat > view.south - margin && lat < view.north + margin);
      if (!near) continue;
      const d = polygon.map((ring) => "M" + ring.map(([lon, lat]) => `${x(lon).toFixed(1)},${y(lat).toFixed(1)}`).join("L") + "Z").join("");
      el("path", { d, "data-country": country.properties.name }, land);
    }
  }
}

function drawZones() {
  const group = $("zones");
  group.replaceChildren();
  $("zone-list").replaceChildren();
  for (const zone of zones) {
    const shape = zone.shape;
    if (shape.type === "circle") {
      el("circle", { cx: x(shape.center.lon), cy: y(shape.center.lat), r: (shape.radius_m / 111320) * view.scale, "data-zone": zone.id }, group);
    } else {
      el("polygon", { points: shape.vertices.map((v) => `${x(v.lon)},${y(v.lat)}`).join(" "), "data-zone": zone.id }, group);
    }
    const item = document.createElement("li");
    item.textContent = `${zone.name || zone.id}${zone.scope === "global" ? " (everyone's)" : ""}`;
    $("zone-list").appendChild(item);
  }
}

function drawTracks() {
  const group = $("tracks");
  group.replaceChildren();
  for (const [id, points] of tracks) {
    if (points.length < 2) continue;
    el("polyline", { points: points.map(([lon, lat]) => `${x(lon).toFixed(1)},${y(lat).toFixed(1)}`).join(" "), "data-track": id }, group);
  }
}

// The snapshot's operator columns: whose tag, and what the stats counted.
const SNAPSHOT_COLUMNS = [
  ["customer", (p) => p.customer || "unassigned"],
  ["readings", (p) => String(p.readings)],
  ["counted", (p) => String(p.counted)],
  ["km", (p) => (p.distance_m / 1000).toFixed(1)],
];
let extraColumns = [];

function drawDevices() {
  const group = $("devices");
  group.replaceChildren();
  const rows = $("device-table").tBodies[0];
  rows.replaceChildren();
  for (const [id, device] of [...devices].sort()) {
    const geometry = device.feature.geometry;
    const p = device.feature.properties;
    if (geometry) {
      const [lon, lat] = geometry.coordinates;
      const dot = el("circle", { cx: x(lon), cy: y(lat), r: 5, "data-device": id, "data-lat": lat, "data-lon": lon, "data-moves": device.moves }, group);
      el("title", {}, dot).textContent = `${id} at ${p.time}`;
      el("text", { x: x(lon) + 7, y: y(lat) - 7 }, group).textContent = id;
    }
    const row = rows.insertRow();
    row.dataset.device = id;
    const cells = [id, p.time ? p.time.slice(11, 19) : "-", p.speed_mps == null ? "-" : `${(p.speed_mps * 3.6).toFixed(0)} km/h`, p.battery_pct == null ? "-" : `${p.battery_pct.toFixed(0)}%`];
    for (const text of cells.concat(extraColumns.map(([, cell]) => cell(p)))) {
      row.insertCell().textContent = text;
    }
  }
}

function drawAlerts() {
  const group = $("alert-marks");
  group.replaceChildren();
  $("alert-list").replaceChildren();
  for (const alert of alerts) {
    const item = document.createElement("li");
    item.textContent = `${alert.time.slice(11, 19)} ${alert.subject}`;
    item.dataset.alert = alert.id;
    $("alert-list").appendChild(item);
    // Where the tag was when it fired: the track's point nearest that time.
    const at = Date.parse(alert.time);
    const points = tracks.get(alert.device_id) || [];
    let best = null;
    for (const point of points) if (!best || Math.abs(point[2] - at) < Math.abs(best[2] - at)) best = point;
    if (best) {
      const [px, py] = [x(best[0]), y(best[1])];
      el("path", { d: `M${px},${py - 9}L${px + 5},${py}L${px - 5},${py}Z`, "data-alert": alert.id }, group);
    }
  }
}

function redraw() {
  const points = [];
  for (const device of devices.values()) if (device.feature.geometry) points.push(device.feature.geometry.coordinates);
  for (const track of tracks.values()) for (const point of track) points.push(point);
  // Refit only when something left the view: a map that jumps at every poll cannot be read.
  if (!view || points.some(([lon, lat]) => !inView(lon, lat))) {
    view = fit(points) || fit([[2.35, 48.86]]);
    drawLand();
  }
  drawZones();
  drawTracks();
  drawAlerts();
  drawDevices();
}

async function readTrack(id) {
  const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  const { body } = await get(`/v1/devices/${encodeURIComponent(id)}/track?from=${since}&limit=5000`);
  const feature = body.features[0];
  if (!feature) return tracks.set(id, []);
  const coordinates = feature.geometry.type === "Point" ? [feature.geometry.coordinates] : feature.geometry.coordinates;
  const times = feature.properties.times.map(Date.parse);
  tracks.set(id, coordinates.map(([lon, lat], i) => [lon, lat, times[i]]));
}

async function poll() {
  const { items, changed } = await all("/v1/devices?limit=1000", "features");
  document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
  if (changed || devices.size === 0) {
    const seen = new Set();
    for (const feature of items) {
      seen.add(feature.id);
      const known = devices.get(feature.id);
      const moved = known && JSON.stringify(known.feature.geometry) !== JSON.stringify(feature.geometry);
      const device = known || { moves: 0, trackVersion: null };
      if (moved) {
        device.moves += 1;
        document.body.dataset.moves = String(Number(document.body.dataset.moves) + 1);
      }
      device.feature = feature;
      devices.set(feature.id, device);
      if (device.trackVersion !== feature.properties.version) {
        await readTrack(feature.id);
        device.trackVersion = feature.properties.version;
      }
    }
    for (const id of [...devices.keys()]) if (!seen.has(id)) { devices.delete(id); tracks.delete(id); }
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    alerts = (await all(`/v1/alerts?since=${since}&limit=1000`, "alerts")).items;
    zones = (await all("/v1/geofences", "geofences")).items;
    redraw();
  }
  document.body.dataset.state = "live";
  status(`${devices.size} tag${devices.size === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`);
}

function whoFromToken() {
  // For display only: the API, not this guess, decides whose data it is.
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const groups = [].concat(claims["cognito:groups"] || []);
    const customer = claims.customer_id || claims["custom:customer_id"] ||
      (groups.find((g) => g.startsWith("customer:")) || "").slice(9);
    return customer || (groups.includes("geotag-operators") ? "operator" : claims.sub || "");
  } catch { return ""; }
}

async function run() {
  if (!token) return;
  sessionStorage.setItem("geotag-token", token);
  document.body.dataset.state = "loading";
  $("who").textContent = whoFromToken();
  $("sign-out").hidden = false;
  status("reading the fleet…");
  try {
    world = world || await (await fetch("vendor/countries-50m.json")).json();
  } catch (error) {
    world = null; // the map still works on a blank sea
  }
  for (;;) {
    try {
      await poll();
    } catch (error) {
      if (error instanceof SignedOut) {
        document.body.dataset.state = "signed-out";
        sessionStorage.removeItem("geotag-token");
        status(`signed out: ${error.message}`);
        return;
      }
      status(`retrying: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

// The report's data (geotag-operator's MapData) in the shapes the API's
// documents give the live page, so that both draw through the same code.
function showSnapshot(data) {
  document.body.dataset.state = "snapshot";
  $("who").textContent = data.title;
  for (const device of data.devices) {
    const last = device.points[device.points.length - 1];
    const feature = {
      id: device.id,
      geometry: last ? { type: "Point", coordinates: [last[2], last[1]] } : null,
      properties: {
        time: device.last_seen_ms == null ? null : new Date(device.last_seen_ms).toISOString(),
        speed_mps: device.speed_mps, battery_pct: device.battery, customer: device.customer,
        readings: device.readings, counted: device.counted, distance_m: device.distance_m,
      },
    };
    devices.set(device.id, { feature, moves: 0 });
    tracks.set(device.id, device.points.map(([ms, lat, lon]) => [lon, lat, ms]));
  }
  zones = data.geofences.map((zone) => ({
    id: zone.id, name: zone.name, scope: zone.customer ? "customer" : "global",
    shape: zone.circle
      ? { type: "circle", center: { lat: zone.circle[0], lon: zone.circle[1] }, radius_m: zone.circle[2] }
      : { type: "polygon", vertices: zone.ring.map(([lat, lon]) => ({ lat, lon })) },
  }));
  alerts = data.alerts.map((alert) => ({ id: alert.id, time: new Date(alert.at_ms).toISOString(), subject: alert.subject, device_id: alert.device_id }));
  extraColumns = SNAPSHOT_COLUMNS;
  const header = $("device-table").tHead.rows[0];
  for (const [name] of extraColumns) header.appendChild(document.createElement("th")).textContent = name;
  $("alerts-heading").textContent = "Alerts";
  redraw();
  const generated = new Date(data.generated_at).toISOString().slice(0, 19).replace("T", " ");
  status(`${devices.size} tags · ${alerts.length} alerts · generated ${generated} UTC`);
  document.body.dataset.rendered = `${devices.size} devices, ${alerts.length} alerts`;
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  run();
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("geotag-token");
  location.hash = "";
  location.reload();
});
const snapshot = document.getElementById("geotag-snapshot");
if (snapshot) {
  world = JSON.parse(document.getElementById("geotag-world").textContent);
  showSnapshot(JSON.parse(snapshot.textContent));
} else {
  run();
}
