"""A closed-loop load client process for the serving benchmark (`python -m bench.load_client`).

The benchmark starts a few of these once and drives them over stdin/stdout, one JSON line per
measurement: `{"protocol", "target", "threads", "duration_s"}` in, `{"prepared": true}` out once
the channels are open and warm, then `{"start_at"}` in, `{"latencies_us", "errors",
"first_error"}` out. Each thread owns one gRPC channel (official PredictionService
stub) or one keep-alive HTTP/1.1 connection and sends the same batch-1 Predict back to back
from `start_at` (wall clock, so every process starts together) for `duration_s`, decoding each
answer as a real client would. Clients live in their own processes so that their Python work
does not share the server's GIL, as on a real deployment where callers are other programs.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

REQUEST_TIMEOUT_S = 30.0
WARMUP_CALLS = 3
MAX_ERRORS = 1000  # per measurement: past this the server is down, not shedding


def grpc_caller(target: str, model: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    """One channel and the official stub; the request is built once."""
    from bench.common import inputs_for
    from serving.client import ServingClient, make_ndarray

    client = ServingClient(target, timeout=REQUEST_TIMEOUT_S)
    request = client.predict_request({"features": inputs_for(1)}, model)

    def call() -> Any:
        response = client.predict_raw(request)
        return {k: make_ndarray(v) for k, v in response.outputs.items()}

    return call, client.close


def rest_caller(target: str, model: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    """One keep-alive connection posting TF Serving's row-format body."""
    from bench.common import inputs_for

    body = json.dumps({"instances": inputs_for(1).tolist()}).encode()
    path = f"/v1/models/{model}:predict"
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}

    def call() -> Any:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {data[:200]!r}")
        return json.loads(data)

    return call, conn.close


CALLERS = {"grpc": grpc_caller, "rest": rest_caller}


def measure(command: dict[str, Any], start_at: Callable[[], float]) -> dict[str, Any]:
    """One measurement: `threads` closed loops against one target, from `start_at()` (asked
    once every caller is connected and warm) for `duration_s`."""
    make = CALLERS[command["protocol"]]
    callers = [
        make(command["target"], command.get("model", "mlp")) for _ in range(command["threads"])
    ]
    errors: list[str] = []
    for call, _ in callers:
        for _ in range(WARMUP_CALLS):
            call()
    begin = start_at()
    stop_at = begin + command["duration_s"]
    latencies: list[list[int]] = [[] for _ in callers]

    def loop(i: int) -> None:
        call, own = callers[i][0], latencies[i]
        time.sleep(max(0.0, begin - time.time()))
        while True:
            t0 = time.perf_counter()
            if time.time() >= stop_at:
                return
            try:
                call()
            except Exception as err:  # counted; the client goes on, as a retrying caller would
                errors.append(f"{type(err).__name__}: {err}"[:300])
                if len(errors) > MAX_ERRORS:
                    return
                continue
            own.append(int((time.perf_counter() - t0) * 1e6))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(callers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, close in callers:
        close()
    return {
        "latencies_us": [x for per in latencies for x in per],
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def _start_at() -> float:
    print(json.dumps({"prepared": True}), flush=True)
    return float(json.loads(sys.stdin.readline())["start_at"])


def main() -> int:
    """Answer measurement commands until stdin closes."""
    import serving.client  # noqa: F401  (TensorFlow's protos: seconds to import, done once)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = measure(json.loads(line), _start_at)
        except Exception as err:  # reported to the driver, which fails the point
            result = {
                "latencies_us": [],
                "errors": 1,
                "first_error": f"{type(err).__name__}: {err}",
            }
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
