"""The page's files, served from the package with their security headers.

Everything the page loads comes from this router: no CDN, no fonts or scripts from
elsewhere, no build step.  The Content-Security-Policy allows scripts, styles and
connections from this origin only, and no inline script or style at all, so that a
name in the directory can never run as code even if it slipped past the escaping.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Small files; always asked again, so that an upgrade takes effect at once.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
INDEX = "index.html"


def load_files() -> dict[str, tuple[bytes, str]]:
    """The page's files (name -> content and media type), read once from the package."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("callrouter.web").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    if INDEX not in files:
        raise RuntimeError(f"the web client's {INDEX} is missing from callrouter/web/static")
    return files


def page_routes(files: dict[str, tuple[bytes, str]]) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        found = files.get(name)  # a lookup, never a path: nothing outside the set
        if found is None:
            raise HTTPException(404, "no such file")
        content, media_type = found
        return Response(content, media_type=media_type, headers=SECURITY_HEADERS)

    @routes.get("/")
    async def index() -> Response:
        return serve(INDEX)

    @routes.get("/web/{name}")
    async def asset(name: str) -> Response:
        return serve(name)

    return routes
