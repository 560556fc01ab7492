"""The demo's one figure: per model, how often each method's quantized model picks FP32's class, with its interval."""
from __future__ import annotations

from pathlib import Path

from tsptq.atomic import atomic_write

TSPTQ_COLOR, BASELINE_COLOR = "#c44e52", "#8c9bb0"


def plot_agreement_panels(panels: list[tuple[str, list[dict]]], title: str, path: str | Path) -> None:
    """One panel per ``(panel title, eval rows)``: a dot per method (fp32 left out) at its top-1 agreement with FP32,
    its 95% interval as a whisker, and the top-1 drop written beside it; tsptq in red, on top. Dots, not bars: each
    panel's axis is zoomed to its range, which would make bar lengths mislead. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [r for r in rows if r["method"] != "fp32"]) for name, rows in panels]
    height = max(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 0.55 * height + 1.9), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels):
        rows = sorted(rows, key=lambda r: ("tsptq" in r["method"], r["agreement"]))  # tsptq ends up on top
        y = range(len(rows))
        vals = [r["agreement"] for r in rows]
        cis = [r.get("agreement_ci") or (v, v) for r, v in zip(rows, vals)]
        err = [[max(0.0, v - c[0]) for v, c in zip(vals, cis)], [max(0.0, c[1] - v) for v, c in zip(vals, cis)]]
        colors = [TSPTQ_COLOR if "tsptq" in r["method"] else BASELINE_COLOR for r in rows]
        for k in y:
            ax.errorbar(vals[k], k, xerr=[[err[0][k]], [err[1][k]]], fmt="o", color=colors[k], ecolor=colors[k],
                        markersize=9 if "tsptq" in rows[k]["method"] else 7, capsize=4, linewidth=2)
        low = min(c[0] for c in cis)
        ax.set_xlim(max(0.0, low - 0.35 * (100.0 - low) - 1.0), 100.0)
        ax.set_yticks(list(y), [r["method"] for r in rows], fontsize=10)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.axvline(100.0, color="#333333", linewidth=0.8)
        for k, (r, c) in enumerate(zip(rows, cis)):
            drop = "" if r.get("drop") is None else f", drop {r['drop']:+.2f} pt"
            ax.annotate(f"{r['agreement']:.1f}%{drop}", (r["agreement"], k), xytext=(0, 8), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, fontweight="bold" if "tsptq" in r["method"] else "normal",
                        annotation_clip=False)
        ax.set_xlabel("top-1 agreement with FP32 (%)", fontsize=9)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
