"""Wires the fallback: directory changes and AMI logins publish to AstDB."""

from __future__ import annotations

from callrouter.ami.client import AmiClient
from callrouter.directory.live import LiveDirectory
from callrouter.fallback.service import FallbackService


def build(ami: AmiClient, live: LiveDirectory, *, node: str | None = None) -> FallbackService:
    service = FallbackService(ami, live, node=node)
    live.subscribe(service.directory_changed)
    ami.on_connected = service.on_ami_connected
    return service
