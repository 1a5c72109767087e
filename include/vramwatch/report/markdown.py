"""Render a Report as Markdown in the seed's layout (header lines, key findings, one table per model, ...)."""

from __future__ import annotations

from collections.abc import Sequence

from vramwatch.report.tables import Table


def table(t: Table, level: str = "##") -> str:
    lines = [f"{level} {t.title}", "", "| " + " | ".join(t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in t.rows]
    if not t.rows:
        lines.append("| " + " | ".join(["(none)"] + [""] * (len(t.header) - 1)) + " |")
    if t.note:
        lines += ["", f"_{t.note}_"]
    if t.link:
        lines += ["", f"[{t.link[0]}]({t.link[1]})"]
    return "\n".join(lines)


def render(title: str, top: list[str], header: list[tuple[str, str]], findings: list[str],
           sections: list[Table], notices: Sequence[str] = ()) -> str:
    parts = [f"# {title}", "", *(f"> **Warning:** {notice}\n" for notice in notices),
             *(f"- {line}" if i else line for i, line in enumerate(top)), "",
             "  \n".join(f"**{label}**: {value}" for label, value in header), "", "---", "",
             "## Key Findings", "", *(f"- {b}" for b in findings), ""]
    for section in sections:
        parts += ["---", "", table(section), ""]
    return "\n".join(parts)
