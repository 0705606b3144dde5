"""A flow's event stream that the CLI leaves at its `end` event must not hand its connection,
still holding the stream's last bytes, to the next request (seen through the API server's
proxy: `kubectl kflow submit --watch` then failed with BadStatusLine('0\\r\\n'))."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kflow.cli.client import ApiLocation, Connection, KflowApi


class LateTerminator(BaseHTTPRequestHandler):
    """SSE in chunked encoding whose closing chunk comes a moment after the `end` event, on
    a keep-alive connection; any other path answers JSON."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.endswith("/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in (b"event: flow\ndata: {}\n\n", b"event: end\ndata: {}\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            time.sleep(0.3)  # the client has stopped reading by now
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        body = b'{"username": "jane", "groups": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LateTerminator)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_request_after_an_event_stream_left_at_its_end_gets_a_clean_connection(
        server: str) -> None:
    api = KflowApi(Connection(host="https://unused", namespace="a", context="c", user="u",
                              token="t"), ApiLocation.parse(None), direct_url=server)
    seen = []
    for event in api.events("a", "f"):
        seen.append(event.name)
        if event.name == "end":
            break  # as watch and submit --watch do
    assert seen == ["flow", "end"]
    # At once, as `submit --watch` prints the tree: the stream's closing chunk is still on its
    # way, and must not be read as this request's answer.
    assert api.whoami()["username"] == "jane"
