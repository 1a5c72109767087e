"""The vramwatch web page (VRAM history, open incidents, the latest seed table and report): a FastAPI app that
routes and renders; what it shows is built in vramwatch.report."""
