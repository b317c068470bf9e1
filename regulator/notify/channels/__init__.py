"""Channel adapters: one module each, one interface (base.Channel.send); made by build()."""

from __future__ import annotations

from typing import Any

from ..config import Channel as Spec
from .base import Adapter, Failed, Outgoing

__all__ = ["Adapter", "Failed", "Outgoing", "build"]


def build(spec: Spec, http: Any, mqtt_factory: Any = None) -> Adapter:
    """The adapter for a configured channel; http is the deliverer's aiohttp.ClientSession."""
    from . import dingtalk, feishu, mqtt, sms, smtp, webhook, wecom

    kinds = {"wecom": wecom.WeCom, "dingtalk": dingtalk.DingTalk, "feishu": feishu.Feishu,
             "sms": sms.Provider, "voice": sms.Provider, "forward": webhook.Forward}  # fmt: skip
    if spec.type == "smtp":
        return smtp.Smtp(spec)
    if spec.type == "mqtt":
        return mqtt.Republish(spec)
    return kinds[spec.type](spec, http)
