"""moto's server, as `moto_server` runs it, with two differences: each DynamoDB
request is applied whole before the next begins, and IoT certificate ids are
AWS's (see below).

DynamoDB applies a conditional write atomically: of two concurrent
`attribute_not_exists(id)` writes to one item, exactly one succeeds. moto's
server handles requests on many threads and checks a condition, then writes,
with no lock between; two concurrent claims can both succeed (measured: 1 in
300 rounds of four writers). The alerts function's exactly-once claim, and any
test that delivers a batch twice at once, depend on that atomicity, so the
local stack restores it by serialising DynamoDB requests (and DynamoDB Streams
ones, which read the same tables). Other services keep moto's concurrency: an
SQS long poll must not stall the tables.

The server also ends when the process that started it does (a test killed
before it could stop its emulator leaves nothing running).

Arguments: host port. The server binds them and announces the bound address on
stderr, as werkzeug does (` * Running on http://HOST:PORT`); port 0 lets the
kernel choose.
"""

import os
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.core.config import default_user_config
from werkzeug.serving import run_simple

# IoT certificate ids as AWS computes them (the SHA-256 of the certificate's
# DER), so that the local broker finds a connecting tag's certificate by the
# certificate it presents. moto hashes the PEM text unless told.
default_user_config.setdefault("iot", {})["use_valid_cert"] = True

host, port = sys.argv[1], int(sys.argv[2])
moto = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def application(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
        with dynamodb:
            # The response body is produced inside the lock, so the request's
            # effects are complete before another DynamoDB request starts.
            return list(moto(environ, start_response))
    return moto(environ, start_response)


def exit_with_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
run_simple(host, port, application, threaded=True, request_handler=MotoRequestHandler)
