"""Figures for people: TTFT-TPOT Pareto frontier, throughput vs cost, memory per device, and the
pipeline schedule as a timeline. matplotlib with the Agg backend; files written atomically.
Error bars are the estimates' uncertainty bands (relative error at 80% coverage)."""

from __future__ import annotations

import io

from ir.errors import UserError
from ir.fileio import write_atomic


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'aot-planner[plot]'") from None
    return plt


def save_figure(fig, path: str | None):
    """Write the figure as PNG (atomically) and close it; with no path, return it (for tests)."""
    if path is None:
        return fig
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    write_atomic(path, buffer.getvalue())
    _pyplot().close(fig)
    return path


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (x, y), both smaller-is-better, sorted by x.

    >>> pareto_frontier([(1, 5), (2, 2), (3, 3), (4, 1)])
    [(1, 5), (2, 2), (4, 1)]
    """
    frontier, best_y = [], float("inf")
    for x, y in sorted(points):
        if y < best_y:
            frontier.append((x, y))
            best_y = y
    return frontier


def plot_ttft_tpot(records: list[dict], path: str | None, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    ok = [r for r in records if r.get("ok") and r.get("ttft_s") and r.get("tpot_s")]
    if not ok:
        raise UserError("no point of the sweep has both TTFT and TPOT to plot; use a serving workload")
    for cluster in sorted({r["cluster"] for r in ok}):
        rs = [r for r in ok if r["cluster"] == cluster]
        err = [(r.get("relative_error_80") or 0) for r in rs]
        ax.errorbar([r["ttft_s"] * 1e3 for r in rs], [r["tpot_s"] * 1e3 for r in rs],
                    xerr=[r["ttft_s"] * 1e3 * e for r, e in zip(rs, err)],
                    yerr=[r["tpot_s"] * 1e3 * e for r, e in zip(rs, err)], fmt="o", capsize=2, label=cluster)
    front = pareto_frontier([(r["ttft_s"] * 1e3, r["tpot_s"] * 1e3) for r in ok])
    ax.plot([x for x, _ in front], [y for _, y in front], "k--", linewidth=1, label="Pareto frontier")
    ax.set_xlabel("time to first token, TTFT (ms)")
    ax.set_ylabel("time per output token, TPOT (ms)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_throughput_cost(records: list[dict], path: str | None, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    ok = [r for r in records if r.get("ok") and (r.get("output_tokens_per_s") or r.get("tokens_per_s"))]
    if not ok:
        raise UserError("no point of the sweep has a throughput to plot")
    for r in ok:
        tput = r.get("output_tokens_per_s") or r.get("tokens_per_s")
        cost = r.get("dollars_per_hour") or 0.0
        e = r.get("relative_error_80") or 0
        ax.errorbar([cost], [tput], yerr=[tput * e], fmt="o", capsize=2)
        ax.annotate(r["cluster"], (cost, tput), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("cluster price ($ per hour; 0 where the device has no listed price)")
    ax.set_ylabel("throughput (tokens/s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_memory(records: list[dict], path: str | None, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = [r for r in records if r.get("memory_per_device_bytes")]
    labels = [f"{r['cluster']} {r.get('layout', '')}" for r in ok]
    ax.barh(range(len(ok)), [r["memory_per_device_bytes"] / 1e9 for r in ok])
    ax.set_yticks(range(len(ok)), labels, fontsize=6)
    ax.set_xlabel("memory per device (GB)")
    ax.set_ylabel("configuration")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_pipeline(plan: dict, path: str | None, microbatches: int = 8):
    """The pipeline schedule (1F1B, GPipe or interleaved) of a training plan as a timeline (stage
    rows, time in ms); interleaved units are 1/v of a stage's time and labelled "F3.1"."""
    from cost_models.pipeline_schedule import stage_order

    plt = _pyplot()
    d, p = plan["decision"], plan["predicted"]
    times = p.get("stage_times_s") or [1.0] * d["pp"]
    m = min(d.get("microbatches", 1), microbatches)
    fig, ax = plt.subplots(figsize=(9, 1 + 0.5 * d["pp"]))
    schedule, v = d.get("schedule", "1f1b"), d.get("virtual_stages", 1)
    if schedule == "interleaved" and m % d["pp"]:
        m = d["pp"]  # interleaving runs rounds of pp microbatches
    slot = max(times) * 1e3 / 3 / v  # forward ~1/3, backward ~2/3 of a microbatch's (chunk's) stage time
    for s, order in enumerate(stage_order(schedule, d["pp"], s, m, v) for s in range(d["pp"])):
        t = s * slot
        for token in order:
            width = slot if token[0] == "F" else 2 * slot
            ax.barh(s, width, left=t, color="tab:blue" if token[0] == "F" else "tab:orange", edgecolor="white")
            ax.text(t + width / 2, s, token, ha="center", va="center", fontsize=6, color="white")
            t += width
    ax.set_yticks(range(d["pp"]), [f"stage {s}" for s in range(d["pp"])])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms, slowest stage's pace)")
    ax.set_ylabel("pipeline stage")
    name = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": f"interleaved 1F1B (v={v})"}.get(schedule, schedule)
    ax.set_title(f"{name} schedule of {plan.get('model_name', '')}: first {m} microbatches (F forward, B backward)")
    return save_figure(fig, path)
