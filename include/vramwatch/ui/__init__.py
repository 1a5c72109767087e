"""The vramwatch web page (VRAM history, open incidents, the latest seed table and report): a FastAPI app."""
