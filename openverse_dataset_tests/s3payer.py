"""moto's S3 server with the one endpoint it lacks: a bucket's request-payment setting.

moto accepts `PUT ?requestPayment` and ignores it, and answers `GET ?requestPayment` with a bucket listing, so
no client can see whether a bucket is requester-pays. This loopback proxy keeps that setting per bucket and
forwards everything else to moto unchanged (boto3 talks to it as to any S3 endpoint; nothing is patched).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from openverse_dataset_tests.procs import http_server

_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<RequestPaymentConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Payer>{}</Payer></RequestPaymentConfiguration>'


@contextmanager
def with_request_payment(moto_url: str) -> Iterator[str]:
    """Serve moto at `moto_url` plus request payment on a free loopback port; yields the proxy's URL."""
    target = urlsplit(moto_url)
    payers: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            path, _, query = self.path.partition("?")
            bucket = path.strip("/").split("/")[0]
            if "requestPayment" in query.split("&"):
                if self.command == "PUT":
                    m = re.search(rb"<Payer>(\w+)</Payer>", body)
                    payers[bucket] = m.group(1).decode() if m else "BucketOwner"
                    return self._reply(200, b"")
                return self._reply(200, _XML.format(payers.get(bucket, "BucketOwner")).encode())
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self._reply(resp.status, data, [(k, v) for k, v in resp.getheaders() if k.lower() != "content-length"])
            conn.close()

        def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]] = ()) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in ("transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        def log_message(self, *args) -> None:
            pass

    with http_server(Handler) as url:
        yield url
