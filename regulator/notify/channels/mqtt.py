"""The forward payload republished on MQTT for a city bridge (QoS 1, not retained).

aiomqtt, as the gateway uses it; one connection per channel, made at the first message and made
again after a failure. The topic is the configured one plus "/<site>".
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse

from ..config import Channel
from .base import Adapter, Failed, Outgoing


class Republish(Adapter):
    def __init__(self, spec: Channel) -> None:
        u = urllib.parse.urlsplit(spec.options["url"])
        self.name, self.topic = spec.name, spec.options["topic"].rstrip("/")
        self.host, self.tls = u.hostname, u.scheme == "mqtts"
        self.port = u.port or (8883 if self.tls else 1883)
        self.username, self._password = spec.options.get("username"), spec.secrets.get("password")
        self._client = None
        self._lock: asyncio.Lock | None = None  # made in the deliverer's loop, not here

    async def _connect(self):
        import aiomqtt

        c = aiomqtt.Client(self.host, self.port, username=self.username,
                           password=self._password, timeout=10,
                           tls_context=ssl.create_default_context() if self.tls else None,
                           identifier=None)  # fmt: skip
        await c.__aenter__()
        return c

    async def send(self, msg: Outgoing) -> str:
        import aiomqtt

        payload = json.dumps(msg.body["payload"], ensure_ascii=False, sort_keys=True,
                             separators=(",", ":"))  # fmt: skip
        topic = "%s/%s" % (self.topic, msg.site or "-")
        self._lock = self._lock or asyncio.Lock()
        try:
            async with self._lock:  # sends at once: one connection, not one each, left open
                if self._client is None:
                    self._client = await self._connect()
                client = self._client
            await client.publish(topic, payload, qos=1)
        except (aiomqtt.MqttError, OSError) as e:
            await self.close()
            raise Failed("mqtt: %s" % str(e)[:200]) from None
        return "mqtt ok"

    async def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                await c.__aexit__(None, None, None)
            except Exception:  # already gone: nothing to close
                pass
