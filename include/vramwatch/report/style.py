"""The report's stylesheet and its Content-Security-Policy hash.

The report inlines its CSS so that summary.html stands alone (opened from disk, or served by the UI). The UI's
policy allows exactly this style block by its hash, so no other inline style or script is let in. Light on purpose:
the UI imports it when Airflow loads the plugin.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

TEMPLATES = Path(__file__).with_name("templates")  # the report's, and the page's figures (figure.svg.j2)
CSS = (TEMPLATES / "summary.css").read_text()
CSP_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode() + "'"
