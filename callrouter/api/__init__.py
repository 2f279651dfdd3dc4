"""The HTTP API for client apps and admins (FastAPI; OpenAPI at /openapi.json)."""

from callrouter.api.app import create_api
from callrouter.api.tokens import TokenSigner

__all__ = ["TokenSigner", "create_api"]
