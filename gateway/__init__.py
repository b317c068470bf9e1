"""The GasGuard site gateway (asyncio): device links, outbox, regulator MQTT stream."""
