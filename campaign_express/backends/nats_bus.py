"""The production bus: NATS with JetStream (the interface and its contract are in `bus`).

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

import nats.aio.client
import nats.aio.msg
import nats.aio.subscription
import nats.errors
import nats.js.api
import nats.js.client
import nats.js.errors
import nats.js.kv
import nats.js.object_store

from campaign_express import env
from campaign_express.backends.bus import (
    BusTimeout,
    BusUnavailable,
    Handler,
    Message,
    StreamMessage,
    Subscription,
    _check_kv,
    _check_pattern,
    _check_queue,
    _check_stream,
    _check_subject,
    _run_handler,
)

logger = logging.getLogger(__name__)


@contextmanager
def _unavailable_on_error(action: str) -> Iterator[None]:
    try:
        yield
    except (nats.errors.Error, OSError) as error:
        raise BusUnavailable(f"nats {action}: {error!r}") from error


# JetStream's answers when it cannot place the replicas asked for: "replicas > 1 not supported
# in non-clustered mode" (a single server) and "no suitable peers for placement" (too few
# servers up).
_REPLICA_ERROR_CODES = (10074, 10005)


@contextmanager
def _replicas_named_on_error(action: str, replicas: int) -> Iterator[None]:
    try:
        yield
    except nats.js.errors.APIError as error:
        if error.err_code not in _REPLICA_ERROR_CODES:
            raise
        raise BusUnavailable(
            f"nats {action}: {error.description} ({env.NATS_REPLICAS}={replicas} needs a "
            f"JetStream cluster with at least {replicas} servers up)"
        ) from error


class _NatsSubscription:
    def __init__(self, subscription: nats.aio.subscription.Subscription) -> None:
        self._subscription = subscription

    async def unsubscribe(self) -> None:
        with _unavailable_on_error("unsubscribe"):
            await self._subscription.unsubscribe()


class NatsBus:
    """The production bus: a NATS connection that reconnects by itself.

    `connect` gives up after `connect_timeout` seconds with `BusUnavailable` (nats-py alone
    would retry forever with unlimited reconnects); once connected, the client reconnects
    without limit and buffers publishes meanwhile, so a NATS restart costs no process its
    subscriptions. Every server round trip (flush, JetStream API) has `timeout`.

    Streams, key-value buckets and object stores it creates get `replicas` copies, by
    default `CAMPAIGN_EXPRESS__NATS__REPLICAS`; ones that exist keep theirs.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 3.0,
        timeout: float = 2.0,
        name: str = "campaign-express",
        replicas: int | None = None,
    ) -> None:
        if replicas is not None and not 1 <= replicas <= env.NATS_MAX_REPLICAS:
            raise ValueError(
                f"replicas must be between 1 and {env.NATS_MAX_REPLICAS}, got {replicas}"
            )
        self._url = url
        self._replicas = env.nats_replicas() if replicas is None else replicas
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._name = name
        self._client: nats.aio.client.Client | None = None
        self._buckets: dict[str, nats.js.kv.KeyValue] = {}
        self._object_stores: dict[str, nats.js.object_store.ObjectStore] = {}
        self._pull_subscriptions: dict[
            tuple[str, str], nats.js.client.JetStreamContext.PullSubscription
        ] = {}

    async def _log_error(self, error: Exception) -> None:
        logger.warning("nats: %r", error)

    def _connected_client(self) -> nats.aio.client.Client:
        if self._client is None:
            raise BusUnavailable("nats bus is not connected")
        return self._client

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = nats.aio.client.Client()
        try:
            await asyncio.wait_for(
                client.connect(
                    servers=[self._url],
                    name=self._name,
                    connect_timeout=max(1, round(self._connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    drain_timeout=5,
                    error_cb=self._log_error,
                ),
                self._connect_timeout,
            )
        except (nats.errors.Error, OSError) as error:
            await client.close()
            raise BusUnavailable(f"nats connect: {error!r}") from error
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        self._buckets.clear()
        self._object_stores.clear()
        self._pull_subscriptions.clear()
        if client is None:
            return
        if client.is_connected:
            try:
                await client.drain()
            except (nats.errors.Error, OSError) as error:
                logger.warning("nats drain failed: %r", error)
        await client.close()

    async def ping(self) -> None:
        client = self._connected_client()
        if not client.is_connected:
            raise BusUnavailable("nats bus is reconnecting")
        with _unavailable_on_error("ping"):
            await client.flush(timeout=self._timeout)  # type: ignore[arg-type]

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        _check_subject(subject)
        client = self._connected_client()
        with _unavailable_on_error("publish"):
            await client.publish(subject, data, headers=dict(headers) if headers else None)

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        _check_pattern(subject)
        _check_queue(queue)
        client = self._connected_client()

        async def deliver(msg: nats.aio.msg.Msg) -> None:
            message = Message(
                subject=msg.subject,
                data=msg.data,
                headers=dict(msg.headers or {}),
                reply=msg.reply or "",
                _bus=self,
            )
            await _run_handler(handler, message)

        with _unavailable_on_error("subscribe"):
            subscription = await client.subscribe(subject, queue=queue or "", cb=deliver)
            await client.flush(timeout=self._timeout)  # type: ignore[arg-type]
        return _NatsSubscription(subscription)

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        return (await self.request_message(subject, data, timeout=timeout)).data

    async def request_message(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        _check_subject(subject)
        client = self._connected_client()
        try:
            reply = await client.request(
                subject, data, timeout=timeout, headers=dict(headers) if headers else None
            )
        except nats.errors.NoRespondersError as error:
            raise BusTimeout(f"no responders on {subject!r}") from error
        except nats.errors.TimeoutError as error:
            raise BusTimeout(f"no answer on {subject!r} within {timeout} s") from error
        except (nats.errors.Error, OSError) as error:
            raise BusUnavailable(f"nats request: {error!r}") from error
        return Message(subject=reply.subject, data=reply.data, headers=dict(reply.headers or {}))

    async def _bucket(self, bucket: str) -> nats.js.kv.KeyValue:
        """The bucket's handle, creating the bucket (history 1) the first time it is used."""
        handle = self._buckets.get(bucket)
        if handle is not None:
            return handle
        jetstream = self._connected_client().jetstream(timeout=self._timeout)
        with _unavailable_on_error("key_value"):
            try:
                handle = await jetstream.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    with _replicas_named_on_error("key_value", self._replicas):
                        handle = await jetstream.create_key_value(
                            bucket=bucket, history=1, replicas=self._replicas
                        )
                except nats.js.errors.BadRequestError:
                    # Another process created it between our lookup and create.
                    handle = await jetstream.key_value(bucket)
        self._buckets[bucket] = handle
        return handle

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        _check_kv(bucket, key)
        handle = await self._bucket(bucket)
        with _unavailable_on_error("kv_put"):
            return await handle.put(key, value)

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        _check_kv(bucket, key)
        handle = await self._bucket(bucket)
        with _unavailable_on_error("kv_get"):
            try:
                entry = await handle.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
        return entry.value or b""

    async def _object_store(self, bucket: str) -> nats.js.object_store.ObjectStore:
        """The object store's handle (JetStream object store), created on first use."""
        handle = self._object_stores.get(bucket)
        if handle is not None:
            return handle
        jetstream = self._connected_client().jetstream(timeout=self._timeout)
        with _unavailable_on_error("object_store"):
            try:
                handle = await jetstream.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    with _replicas_named_on_error("object_store", self._replicas):
                        handle = await jetstream.create_object_store(
                            bucket=bucket, replicas=self._replicas
                        )
                except nats.js.errors.BadRequestError:
                    handle = await jetstream.object_store(bucket)
        self._object_stores[bucket] = handle
        return handle

    async def object_put(self, bucket: str, name: str, data: bytes) -> None:
        _check_kv(bucket, name)
        handle = await self._object_store(bucket)
        with _unavailable_on_error("object_put"):
            await handle.put(name, data)

    async def object_get(self, bucket: str, name: str) -> bytes | None:
        _check_kv(bucket, name)
        handle = await self._object_store(bucket)
        with _unavailable_on_error("object_get"):
            try:
                result = await handle.get(name)
            except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
                return None
        return bytes(result.data or b"")

    def _jetstream(self) -> nats.js.client.JetStreamContext:
        return self._connected_client().jetstream(timeout=self._timeout)

    async def stream_ensure(
        self, name: str, subjects: tuple[str, ...], *, duplicate_window: float = 120.0
    ) -> None:
        _check_stream(name, subjects)
        jetstream = self._jetstream()
        with _unavailable_on_error("stream_ensure"):
            try:
                await jetstream.stream_info(name)
            except nats.js.errors.NotFoundError:
                try:
                    with _replicas_named_on_error("stream_ensure", self._replicas):
                        await jetstream.add_stream(
                            name=name,
                            subjects=list(subjects),
                            storage=nats.js.api.StorageType.FILE,
                            duplicate_window=duplicate_window,
                            num_replicas=self._replicas,
                        )
                except nats.js.errors.BadRequestError:
                    await jetstream.stream_info(name)  # created meanwhile by another process

    async def stream_publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        _check_subject(subject)
        jetstream = self._jetstream()
        with _unavailable_on_error("stream_publish"):
            ack = await jetstream.publish(
                subject,
                data,
                timeout=self._timeout,
                headers={**(headers or {}), "Nats-Msg-Id": msg_id},
            )
        return not ack.duplicate

    async def _pull_subscription(
        self, stream: str, consumer: str, ack_wait: float
    ) -> nats.js.client.JetStreamContext.PullSubscription:
        key = (stream, consumer)
        subscription = self._pull_subscriptions.get(key)
        if subscription is None:
            jetstream = self._jetstream()
            with _unavailable_on_error("stream_fetch"):
                info = await jetstream.stream_info(stream)
                subjects = info.config.subjects or []
                # NATS 2.9: one filter subject per consumer, so a consumer takes the whole
                # stream when it captures several subjects.
                subscription = await jetstream.pull_subscribe(
                    subjects[0] if len(subjects) == 1 else "",
                    durable=consumer,
                    stream=stream,
                    config=nats.js.api.ConsumerConfig(
                        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                        ack_wait=ack_wait,
                        max_ack_pending=-1,
                    ),
                )
            self._pull_subscriptions[key] = subscription
        return subscription

    async def stream_fetch(
        self,
        stream: str,
        consumer: str,
        *,
        batch: int,
        timeout: float,
        ack_wait: float = 30.0,
    ) -> list[StreamMessage]:
        subscription = await self._pull_subscription(stream, consumer, ack_wait)
        try:
            messages = await subscription.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when idle
            return []
        except (nats.errors.Error, OSError) as error:
            raise BusUnavailable(f"nats stream_fetch: {error!r}") from error

        def settler(msg: nats.aio.msg.Msg) -> Callable[[bool], Awaitable[None]]:
            async def settle(is_done: bool) -> None:
                with _unavailable_on_error("ack"):
                    await (msg.ack_sync(timeout=self._timeout) if is_done else msg.nak())

            return settle

        return [
            StreamMessage(
                subject=msg.subject,
                data=msg.data,
                headers=dict(msg.headers or {}),
                sequence=msg.metadata.sequence.stream,
                deliveries=msg.metadata.num_delivered or 1,
                _settle=settler(msg),
            )
            for msg in messages
        ]

    async def stream_pending(self, stream: str, consumer: str) -> int:
        with _unavailable_on_error("stream_pending"):
            info = await self._jetstream().consumer_info(stream, consumer)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
