"""`planner plan ... --report DIR`: a Markdown and an HTML report of a plan, with its figures."""

from __future__ import annotations

import html
from pathlib import Path

from ir.errors import UserError
from ir.fileio import write_atomic
from ir.plan import Plan
from planner.explain import explain_plan


def memory_figure(plan: dict, path: str | None):
    """Bars of the bytes on one device of each stage (the fullest rank of the stage)."""
    from planner.plots import plot_memory

    d, p = plan["decision"], plan["predicted"]
    mems = p.get("stage_memory_bytes") or [p.get("memory_per_device_bytes") or 0] * len(d["stages"])
    records = [{"cluster": f"stage {i}", "layout": s["device"], "memory_per_device_bytes": m}
               for i, (s, m) in enumerate(zip(d["stages"], mems))]
    return plot_memory(records, path, "memory per device by pipeline stage")


def _figures(plan: dict, folder: Path) -> list[tuple[str, str]]:
    from planner.plots import plot_pipeline

    figures = []
    d = plan["decision"]
    if d["kind"] == "train" and d["pp"] > 1:
        plot_pipeline(plan, str(folder / "pipeline.png"))
        figures.append(("pipeline.png", "Pipeline schedule (1F1B)"))
    memory_figure(plan, str(folder / "memory.png"))
    figures.append(("memory.png", "Memory per device"))
    return figures


def write_report(typed: Plan, folder: str | Path) -> Path:
    """Write report.md, report.html and the figures into `folder` (created if missing)."""
    plan = typed.to_json()
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {out}: {exc.strerror}") from None
    figures = _figures(plan, out)
    text = explain_plan(typed)
    title = f"Plan: {plan.get('model_name', plan['inputs']['model'])} on {plan.get('cluster_description', '')}"
    md = [f"# {title}", "", "```", text.rstrip(), "```", ""]
    md += [f"![{caption}]({name})" for name, caption in figures]
    write_atomic(out / "report.md", "\n".join(md) + "\n")
    body = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(text)}</pre>"]
    body += [f'<figure><img src="{name}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
             for name, c in figures]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) +
            "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;"
            "padding:1em;overflow-x:auto}img{max-width:100%}</style></head><body>" + "".join(body) + "</body></html>\n")
    write_atomic(out / "report.html", page)
    return out
