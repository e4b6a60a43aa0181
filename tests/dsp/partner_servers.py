"""Partner DSPs as real local HTTP servers: each answers bid requests its own way and records
what it received (bid requests and notice calls)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any] | None]]


@dataclass
class PartnerServer:
    answer: Answer
    delay_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    url: str = ""

    def wait_for_notices(self, count: int, timeout: float = 3.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.notices) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.notices


def _handler(partner: PartnerServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            partner.notices.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = json.loads(body)
            partner.requests.append(request)
            partner.headers.append({key.lower(): value for key, value in self.headers.items()})
            if partner.delay_seconds:
                time.sleep(partner.delay_seconds)
            status, payload = partner.answer(request)
            data = json.dumps(payload).encode() if payload is not None else b""
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the bidder cut us off at its deadline

    return Handler


@contextmanager
def partner_server(answer: Answer, *, delay_seconds: float = 0.0) -> Iterator[PartnerServer]:
    partner = PartnerServer(answer=answer, delay_seconds=delay_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(partner))
    server.daemon_threads = True
    partner.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield partner
    finally:
        server.shutdown()
        server.server_close()


def bids(*prices_and_fields: tuple[str, float, dict[str, Any]], cur: str = "USD",
         notices_to: str = "") -> Answer:
    """An answer with one bid per (imp id, price, extra fields); notice URLs point back at the
    partner with every macro in them."""

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        built = []
        for number, (imp_id, price, extra) in enumerate(prices_and_fields):
            bid = {"id": f"pb{number}", "impid": imp_id, "price": price,
                   "adm": "<div>partner ad</div>", "crid": f"cr{number}", "adid": f"ad{number}",
                   "adomain": ["partner.example"]}
            if notices_to:
                macros = ("auction=${AUCTION_ID}&bidid=${AUCTION_BID_ID}&imp=${AUCTION_IMP_ID}"
                          "&seat=${AUCTION_SEAT_ID}&ad=${AUCTION_AD_ID}&price=${AUCTION_PRICE}"
                          "&cur=${AUCTION_CURRENCY}")
                bid["nurl"] = f"{notices_to}/win?{macros}"
                bid["burl"] = f"{notices_to}/bill?{macros}"
                bid["lurl"] = f"{notices_to}/loss?{macros}&loss=${{AUCTION_LOSS}}"
            bid.update(extra)
            built.append(bid)
        return 200, {"id": request["id"], "bidid": "resp1", "cur": cur,
                     "seatbid": [{"seat": "partner", "bid": built}]}

    return answer
