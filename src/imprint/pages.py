"""What every HTML page of imprint shares: the style, figures as data URIs, tables,
readable rounds tables (column names and cells from the readings registry), and where
a page may be written. Pages load nothing from the network."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imprint.readings import READINGS, as_number, format_spread
from imprint.safeio import RunFolderError, read_regular

__all__ = ["CSS", "data_uri", "figure", "table", "fmt", "page", "output_page", "png", "readable"]


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.4}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
nav{padding:6px 24px;background:#eceff1;font-size:13px;position:sticky;top:0}
nav a{margin-right:12px;color:#37474f;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;
margin:14px 0;scroll-margin-top:48px}
h2{font-size:17px;margin:4px 0 10px}
figure{margin:10px 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555;max-width:760px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} th{background:#f5f5f5}
td{white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
pre{background:#f5f5f5;padding:8px;font-size:12px;overflow:auto;max-height:360px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:10px}
.note{font-size:13px;color:#666}
"""


def data_uri(path: Path) -> str:
    kind = {"png": "image/png", "gif": "image/gif", "svg": "image/svg+xml"}[path.suffix[1:]]
    data = read_regular(path)  # a regular file of the folder: never a planted link
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def figure(uri: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return '<p class="note">no rows</p>'
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    # a wide table scrolls inside its card instead of breaking "0.07 ± 0.01" over lines
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number.is_integer() and abs(number) < 1e9:
        return str(int(number))
    return f"{number:.4g}"


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>"
    )


def output_page(path: str | Path, title: str) -> Path:
    """Where a page titled ``title`` may go: an .html file name, not a folder or link,
    and not an existing file other than an earlier page of the same kind (a report
    replaces a report, a comparison a comparison), so that --out can never overwrite a
    run's own files (config.toml, masks, its report)."""
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise RunFolderError(f"--out {path}: a page's file name must end in .html.")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RunFolderError(f"--out {path}: exists and is not a regular file.")
    if path.exists():
        with path.open("rb") as handle:  # a regular file (checked above): its head only
            head = handle.read(4096).decode("utf-8", "replace")
        kind = title.split(":")[0]
        if f"<title>{html.escape(kind)}" not in head:
            raise RunFolderError(
                f"--out {path}: exists and is not an earlier page of this kind ({kind}); "
                "choose another file name."
            )
    return path


def png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # labels and legends whole
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# Column names of rounds tables as a reader wants them (readings: their registry label);
# fractions shown as percentages.
_COLUMN_NAMES = {
    "round": "round",
    "seeds": "seeds",
    "density": "weights left",
    "best_val_top1": "validation top-1 (best)",
    "val_top5_at_best": "top-5",
    "test_top1_at_best": "test top-1 (at best validation)",
    "seconds": "seconds",
}


_PERCENT = ("density", "best_val_top1", "val_top5_at_best", "test_top1_at_best")


def readable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A rounds table for reading: plain column names, percentages where the CLI prints
    percentages, each reading with its sd as one "value ± sd" cell ("too few pairs"
    where there is no value), and no column that is the same in every row."""
    out = []
    for row in rows:
        entry: dict[str, str] = {}
        for key, value in row.items():
            if key.endswith(("_sd", "_low", "_high", "_n", "_reason")):
                continue
            name = _column_name(key)
            sd, reason = row.get(f"{key}_sd"), row.get(f"{key}_reason")
            number = as_number(value)
            spec = READINGS.get(key)
            if reason:
                entry[name] = reason
            elif spec is not None and not math.isfinite(number):
                entry[name] = spec.missing
            elif spec is not None:
                entry[name] = format_spread(number, as_number(sd), spec.digits)
            elif key in _PERCENT or key.startswith("density_l"):
                spread = as_number(sd) if sd not in (None, "") else math.nan
                entry[name] = format_spread(number, spread, 2, percent=True)
            elif sd not in (None, ""):
                entry[name] = format_spread(number, as_number(sd), 3)
            else:
                entry[name] = fmt(value)
        out.append(entry)
    if not out:
        return out
    columns = [k for k in out[0] if k == "round" or len({r.get(k) for r in out}) > 1]
    shown: list[str] = []  # a column equal to an earlier one (layer 0 left = weights left) once
    for key in columns:
        if not any(all(r.get(key) == r.get(other) for r in out) for other in shown):
            shown.append(key)
    return [{k: r.get(k, "") for k in shown} for r in out]


def _column_name(key: str) -> str:
    if key in READINGS:
        return READINGS[key].label
    if key in _COLUMN_NAMES:
        return _COLUMN_NAMES[key]
    for prefix, label in (
        ("density_l", "weights left, layer "),
        ("connected_l", "connected units, layer "),
        ("ipr_l", "weight IPR, layer "),
        ("kurtosis_l", "excess kurtosis, layer "),
    ):
        if key.startswith(prefix) and key.removeprefix(prefix).isdigit():
            return label + key.removeprefix(prefix)
    return key.replace("_", " ")
