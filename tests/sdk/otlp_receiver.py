"""A small OTLP/HTTP (protobuf) trace receiver for the tests, built on the
official `opentelemetry-proto` package: every request body is decoded as an
`ExportTraceServiceRequest` with the generated protobuf classes, so what
llmtap sends is checked against the real schema, not against itself.

It listens on 127.0.0.1 (an ephemeral port), records each request (path,
headers, raw and decompressed body, decoded message, the answer given) and
answers from a script: `(status, retry_after)` pairs used in order, then 200.
A body that does not decode is answered 400 and recorded with its error.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    status: int
    message: ExportTraceServiceRequest | None
    error: str | None = None


@dataclass
class Receiver:
    script: list[tuple[int, str | None]] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                body, message, error = raw, None, None
                try:
                    if headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(raw)
                    message = ExportTraceServiceRequest()
                    message.ParseFromString(body)
                except Exception as e:  # recorded and answered 400
                    message, error = None, repr(e)
                with receiver.lock:
                    status, retry_after = (
                        receiver.script.pop(0) if receiver.script else (200, None)
                    )
                    if error is not None:
                        status, retry_after = 400, None
                    receiver.got.append(
                        Received(time.monotonic(), self.path, headers, raw, body,
                                 status, message, error)
                    )
                out = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                if retry_after is not None:
                    self.send_header("retry-after", retry_after)
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.got)

    def spans(self) -> dict[str, tuple]:
        """span id (hex) → (Span, resource attributes dict) over accepted requests."""
        out = {}
        for r in self.requests():
            if r.status != 200 or r.message is None:
                continue
            for rs in r.message.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        key = s.span_id.hex()
                        assert key not in out, f"span {key} exported twice"
                        out[key] = (s, resource, ss.scope)
        return out

    def wait_for(self, span_ids: list[str], timeout: float = 15) -> dict[str, tuple]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if all(i in spans for i in span_ids):
                return spans
            if time.monotonic() >= deadline:
                missing = [i for i in span_ids if i not in spans]
                raise AssertionError(f"spans never exported: {missing}")
            time.sleep(0.02)


def value(v):
    """An AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        assert kv.key not in out, f"duplicate attribute {kv.key}"
        out[kv.key] = value(kv.value)
    return out
