"""The exchange check and the way into the agent pool, shared by every transport.

HTTP reads the exchange from the path, the token from the `authorization` header and the
address from the connection; gRPC from the message or its metadata and the peer; NATS from
message headers. Whatever carried them, `allows` applies the same rule, so an exchange
secured over HTTP is secured over gRPC and NATS too. Changing it changes who may bid through
every door at once.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Sequence

from bidding import metrics
from bidding.agents import AgentPool
from bidding.handler import Answer, BidHandler
from bidding.snapshot import ExchangeEntry


def bearer_token(authorization: str) -> str:
    return authorization.strip().removeprefix("Bearer ").strip()


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def networks(cidrs: Sequence[str]) -> Networks:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def in_networks(address: str, trusted: Networks) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def caller_address(peer: str, forwarded: Sequence[str], trusted: Networks) -> str:
    """The caller behind trusted proxies (`CAMPAIGN_EXPRESS__API__TRUSTED_PROXIES`): from a
    peer in them, the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
    (the entries before it are the caller's own word); otherwise the peer."""
    if not forwarded or not in_networks(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def allows(exchange: ExchangeEntry, *, token: str, address: str) -> bool:
    """The exchange's check: none, a bearer token (compared by its sha256), or an IP list."""
    if exchange.auth == "token":
        digest = hashlib.sha256(token.encode()).hexdigest()
        return bool(token) and hmac.compare_digest(digest, exchange.token_sha256)
    if exchange.auth == "ip":
        try:
            client = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(client in ipaddress.ip_network(network, strict=False)
                   for network in exchange.allowed_networks)
    return exchange.auth == "none"


class Gateway:
    """HTTP's rules for transports that bring the body whole with the call (gRPC, NATS).

    The answer's status is the one HTTP gives the same request: 404 for an unknown exchange
    (503 while the bidder has no snapshot), 401 or 403 for a caller the exchange refuses,
    then whatever the agent answers.
    """

    def __init__(self, *, handler: BidHandler, agents: AgentPool,
                 is_ready: Callable[[], bool]) -> None:
        self.handler = handler
        self.agents = agents
        self.is_ready = is_ready

    async def answer(self, body: bytes, *, exchange_slug: str, token: str,
                     address: str) -> Answer:
        received_at = time.perf_counter()
        exchange = self.handler.exchange(exchange_slug)
        label = exchange.slug if exchange is not None else "unknown"
        metrics.requests(label).inc()
        try:
            if exchange is None:
                return self._refuse(label, 404 if self.is_ready() else 503)
            if not allows(exchange, token=token, address=address):
                return self._refuse(label, 401 if exchange.auth == "token" else 403)
            return await self.agents.submit(body, exchange=exchange, received_at=received_at)
        finally:
            metrics.LATENCY_US.observe((time.perf_counter() - received_at) * 1_000_000)

    @staticmethod
    def _refuse(label: str, status: int) -> Answer:
        metrics.responses(label, "refused").inc()
        return Answer(status)
