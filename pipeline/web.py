"""The web app behind ``pipeline serve``: the generated site and feeds from ``public/``.

Subscriber pages (sign-up, confirm, unsubscribe, preferences) are routes added to the
same app.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from pipeline.config import Settings
from pipeline.web_subscribers import subscriber_routes

__all__ = ["create_app"]


def create_app(settings: Settings) -> Starlette:
    """An ASGI app serving ``public/``; later routes take precedence over the static mount."""
    settings.paths.public.mkdir(parents=True, exist_ok=True)
    routes: list[BaseRoute] = [
        *subscriber_routes(settings),
        Mount("/", app=StaticFiles(directory=settings.paths.public, html=True), name="public"),
    ]
    return Starlette(routes=routes)
