"""Writes the API's sample events: HTTP API (payload v2) requests as API
Gateway sends them once its JWT authorizer verified the token, claims and
all (a Cognito access token of a user in the group customer:acme).

Run from the repository root: python3 events/make_api_events.py

Invoke them with `cargo lambda invoke --invoke-address 127.0.0.1 api
--data-file events/api/list-devices.json` under `cargo lambda watch`, or
`cargo run -p geotag-cli -- invoke api events/api/list-devices.json`
against a local stack. The handler tests (functions/api/tests/sample_events.rs)
answer each against a registry where tag-0042 is acme's and tag-0007 globex's.
"""
import json, os

TIME_EPOCH = 1796112000000  # 2026-12-01T08:00:00Z


def event(name, method, path, query="", body=None, groups="[customer:acme]", scope="openid"):
    headers = {
        "accept": "application/json",
        "authorization": "Bearer eyJraWQiOi...(verified by API Gateway; the handler never reads it)",
        "host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-forwarded-for": "198.51.100.7",
        "x-forwarded-proto": "https",
    }
    if body is not None:
        headers["content-type"] = "application/json"
    request = {
        "version": "2.0",
        "routeKey": "ANY /v1/{proxy+}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "authorizer": {
                "jwt": {
                    # API Gateway passes every claim as a string, arrays as "[a b]".
                    "claims": {
                        "auth_time": "1796111000",
                        "client_id": "5example0client0id",
                        "cognito:groups": groups,
                        "exp": "1796115600",
                        "iat": "1796112000",
                        "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_EXAMPLE",
                        "jti": "b1c2d3e4-0000-4000-8000-000000000000",
                        "scope": scope,
                        "sub": "7d0c9f4e-0000-4000-8000-000000000000",
                        "token_use": "access",
                        "username": "dispatcher@acme.example",
                    },
                    "scopes": scope.split(" "),
                }
            },
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": f"{name}-request",
            "routeKey": "ANY /v1/{proxy+}",
            "stage": "$default",
            "time": "01/Dec/2026:08:00:00 +0000",
            "timeEpoch": TIME_EPOCH,
        },
        "pathParameters": {"proxy": path.removeprefix("/v1/")},
        "isBase64Encoded": False,
    }
    if body is not None:
        request["body"] = json.dumps(body)
    with open(os.path.join("events", "api", f"{name}.json"), "w") as out:
        json.dump(request, out, indent=2)
        out.write("\n")


event("list-devices", "GET", "/v1/devices", "limit=50")
event("device-track-gpx", "GET", "/v1/devices/tag-0042/track",
      "from=2026-12-01T07:00:00Z&to=2026-12-01T08:00:00Z&format=gpx")
# Another customer's tag: 404, exactly as an unknown one.
event("foreign-device", "GET", "/v1/devices/tag-0007")
event("create-geofence", "POST", "/v1/geofences", body={
    "id": "depot", "name": "Depot",
    "shape": {"type": "circle", "center": {"lat": 48.8606, "lon": 2.3376}, "radius_m": 500},
})
event("operator-alerts", "GET", "/v1/alerts", "customer=acme&since=2026-12-01T00:00:00Z&type=battery_low",
      groups="[geotag-operators]", scope="openid geotag/operator")
