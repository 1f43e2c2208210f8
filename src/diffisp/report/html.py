"""HTML building blocks of the report: escaping, number formatting, tables, figures.

Everything that reaches the page goes through :func:`esc` unless it is :class:`Markup` (a
fragment this module built from escaped parts), so text from a JSON file can never inject tags.
The page is self-contained: inline CSS, figures as base64 data URIs, no scripts.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DASH = "—"  # shown for a value the input file does not have


class Markup(str):
    """HTML that is already safe (built here from escaped parts); :func:`esc` passes it through."""


def esc(value: Any) -> Markup:
    """``value`` as escaped HTML text (``None`` becomes a dash)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(DASH if value is None else str(value), quote=True))


def tag(name: str, content: Any = "", **attrs: Any) -> Markup:
    """``<name attrs>content</name>``; ``class_`` is ``class``; ``None`` attributes are dropped."""
    parts = [name]
    for key, value in attrs.items():
        if value is not None:
            parts.append(f'{key.rstrip("_").replace("_", "-")}="{esc(value)}"')
    return Markup(f"<{' '.join(parts)}>{esc(content)}</{name}>")


def join(parts: Iterable[Any], sep: str = "\n") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


# --- numbers -------------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool, string or container)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def fmt(value: Any, spec: str = ".4g") -> str:
    x = number(value)
    if x is None:
        return DASH if value is None else str(value)
    return str(x) if not math.isfinite(x) else format(x, spec)


def pct(value: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: ``0.344 -> '34.4 %'`` (non-breaking space)."""
    x = number(value)
    if x is None:
        return DASH
    return f"{x:.{digits}%}".replace("%", "\u00a0%") if math.isfinite(x) else str(x)


def pct_pm(mean: Any, std: Any, digits: int = 1) -> str:
    """``'76.0 ± 1.2 %'``; just the mean when there is no spread to show."""
    m, s = number(mean), number(std)
    if m is None:
        return DASH
    if s is None or not math.isfinite(m):
        return pct(m, digits)
    return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}\u00a0%"


def value_pm(stat: Any, spec: str = ".2f", unit: str = "", scale: float = 1.0) -> str:
    """A ``{"mean": m, "std": s}`` column as ``'m ± s unit'`` (values times ``scale``)."""
    if not isinstance(stat, dict) or number(stat.get("mean")) is None:
        return DASH
    m, s = number(stat.get("mean")) * scale, number(stat.get("std"))
    s = None if s is None else s * scale
    text = format(m, spec) if s is None else f"{m:{spec}} ± {s:{spec}}"
    return f"{text}\u00a0{unit}" if unit else text


def seconds(value: Any) -> str:
    x = number(value)
    if x is None:
        return DASH
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min ({x:.0f} s)"


# --- tables and figures --------------------------------------------------------------------------


def table(
    headers: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    col_classes: dict[int, str] | None = None,
    row_classes: Sequence[str | None] | None = None,
    caption: Any = None,
    class_: str | None = None,
) -> Markup:
    """A table; columns listed in ``numeric`` are right-aligned with tabular figures."""
    classes_of = dict.fromkeys(numeric, "num") | (col_classes or {})

    def cells(values: Sequence[Any], name: str) -> Markup:
        return join(
            (tag(name, v, class_=classes_of.get(i)) for i, v in enumerate(values)),
            "",
        )

    head = tag("thead", tag("tr", cells(headers, "th")))
    row_classes = row_classes or [None] * len(rows)
    body = tag(
        "tbody",
        join(tag("tr", cells(r, "td"), class_=c) for r, c in zip(rows, row_classes, strict=True)),
    )
    cap = tag("caption", caption) if caption is not None else ""
    return tag("table", join([cap, head, body]), class_=class_)


def key_value_table(items: Iterable[tuple[Any, Any]], *, caption: Any = None) -> Markup:
    return table(["", ""], [[k, v] for k, v in items], caption=caption, class_="kv")


def grid(items: Iterable[tuple[Any, Any]]) -> Markup:
    """Short key/value pairs (config, package versions) flowed into columns to save height."""
    return tag(
        "dl",
        join(tag("div", join([tag("dt", k), tag("dd", v)], "")) for k, v in items),
        class_="grid",
    )


def figure(path: Path, caption: Any, base: Path) -> Markup:
    """``path`` embedded as a data URI, or a visible note saying why it could not be."""
    shown = _relative(path, base)
    try:
        data = path.read_bytes()
    except OSError:
        return tag("p", f"Figure {shown} is missing.", class_="note")
    if not data.startswith(PNG_MAGIC):
        return tag("p", f"Figure {shown} is not a PNG file; not embedded.", class_="note")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    img = Markup(f'<img src="{esc(uri)}" alt="{esc(caption)}">')
    return tag("figure", join([img, tag("figcaption", join([caption, tag("span", shown)], " "))]))


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def page(title: str, body: Markup) -> str:
    head = join(
        [
            Markup('<meta charset="utf-8">'),
            Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            tag("title", title),
            tag("style", Markup(CSS)),
        ]
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n'
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


CSS = """
:root { --ink: #1d2125; --muted: #5b6470; --rule: #d0d5db; --shade: #f3f5f7;
        --warn-bg: #fff4e0; --warn: #a05a00; --band: #e8f1fb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 1.7em; margin: 0 0 2px; line-height: 1.25; }
h2 { font-size: 1.25em; margin: 2em 0 .6em; padding-bottom: 4px;
     border-bottom: 2px solid var(--ink); }
h3 { font-size: 1.05em; margin: 1.5em 0 .4em; }
p { margin: .5em 0; max-width: 80ch; }
.meta { color: var(--muted); margin: 0 0 1em; }
.summary { font-size: 1.08em; max-width: 85ch; }
.notice { border: 2px solid var(--warn); background: var(--warn-bg); color: #5a3300;
          padding: 10px 14px; margin: 14px 0; border-radius: 4px; max-width: none;
          print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.notice strong { color: var(--warn); }
.note { color: var(--muted); font-size: .92em; }
.warn { color: var(--warn); font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .93em; }
caption { text-align: left; color: var(--muted); padding-bottom: 4px; caption-side: top; }
th, td { padding: 5px 9px; vertical-align: top; text-align: left; }
thead th { border-bottom: 2px solid var(--ink); font-weight: 600; vertical-align: bottom; }
tbody td { border-bottom: 1px solid var(--rule); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td strong.label { white-space: nowrap; }
td .desc { display: block; color: var(--muted); font-size: .88em; font-weight: normal;
           max-width: 46ch; }
td code, p code { font-size: .9em; }
tr.ref td { color: #3c444d; background: var(--shade); }
tr.head td { font-weight: 600; }
tr.trained td { background: var(--band); }
table.kv thead { display: none; }
dl.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
          gap: 0 24px; margin: .6em 0 1em; font-size: .93em; }
dl.grid div { display: flex; justify-content: space-between; gap: 12px; padding: 4px 0;
              border-bottom: 1px solid var(--rule); break-inside: avoid; }
dl.grid dt { color: var(--muted); }
dl.grid dd { margin: 0; text-align: right; overflow-wrap: anywhere; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; }
pre, code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; }
pre { background: var(--shade); padding: 10px 12px; border-radius: 4px; overflow-x: auto;
      white-space: pre-wrap; word-break: break-word; font-size: .88em; }
td.params { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: .88em;
            white-space: pre; }
figure { margin: 1em 0 1.6em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: .92em; margin-top: 4px; max-width: 90ch; }
figcaption span { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; }
a { color: #0b57a4; }
@media print {
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  h2, h3 { break-after: avoid; }
  table, figure, .notice, .keep { break-inside: avoid; }
  a { color: inherit; }
}
"""
