"""What an operator does through one replica that every replica must do too (outage drills),
announced through the gateway's one Redis client.

An event is published on one channel (`{prefix}events`) as JSON with the sending process's
id (a process does not act on its own events) and kept, until it no longer matters, in a hash
(`{prefix}events:kept`), so that a replica started later (or one that was cut off from Redis
when it was sent) finds it at start. Redis never breaks serving: while it is down, events
are not shared and each replica has only its own (the one outage policy of `redis_client`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from rpcgate.rpc.background import Background
from rpcgate.storage.redis_client import RedisLink

Listener = Callable[[str, dict[str, Any]], None]  # (kind, payload)


class SharedEvents:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.origin = secrets.token_hex(8)  # this process
        self.channel = link.key("events", slot="events")
        self.kept = link.key("events", "kept", slot="events")
        self._listener: Listener | None = None
        self._following = Background("shared-events", self._follow)

    def listen(self, listener: Listener) -> None:
        self._listener = listener

    async def start(self) -> None:
        """Acts on the events kept (still in force), then follows new ones."""
        kept = await self.link.run("read kept events", lambda: self.link.client.hgetall(self.kept))
        now = time.time()
        for raw in (kept or {}).values():
            self._deliver(raw, now, own_too=True)
        self._following.start()

    async def close(self) -> None:
        await self._following.stop()

    async def announce(self, kind: str, key: str, payload: dict[str, Any], until: float) -> int:
        """Sends an event to every process; kept under `key` until wall time `until` (0:
        the event ends what `key` kept). How many processes heard it (this one included),
        0 when Redis could not be told."""
        message = orjson.dumps(
            {"origin": self.origin, "kind": kind, "until": until, "payload": payload}
        )
        client = self.link.client

        async def send() -> int:
            if until > time.time():
                await client.hset(self.kept, key, message)
            else:
                await client.hdel(self.kept, key)
            heard: int = await client.publish(self.channel, message)
            return heard

        heard = await self.link.run("announce " + kind, send, write=True)
        return heard or 0

    async def _follow(self) -> None:
        await self.link.follow("events", lambda: [self.channel], self._heard)

    def _heard(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, bytes | str):
            self._deliver(data, time.time())

    def _deliver(self, raw: bytes | str, now: float, own_too: bool = False) -> None:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or self._listener is None:
            return
        if event.get("origin") == self.origin and not own_too:
            return
        until = event.get("until")
        payload = event.get("payload")
        kind = event.get("kind")
        if not isinstance(payload, dict) or not isinstance(kind, str):
            return
        payload = {**payload, "until": until if isinstance(until, int | float) else 0}
        if payload["until"] and payload["until"] <= now:
            return  # over already
        self._listener(kind, payload)
