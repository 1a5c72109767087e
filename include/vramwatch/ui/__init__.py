"""The vramwatch web page (VRAM history, open incidents, the latest seed table and report): a FastAPI app."""

from vramwatch.ui.app import create_app

__all__ = ["create_app"]
