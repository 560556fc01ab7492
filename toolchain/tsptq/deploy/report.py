"""The on-device report of ``tsptq-deploy`` / ``tsptq profile``: a terminal table, Markdown and a PNG of per-op time."""
from __future__ import annotations

from pathlib import Path

from tsptq.atomic import atomic_write


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if v else "0"


def latency_line(r: dict) -> str:
    lat = r["latency"]
    note = {"instructions": " (QEMU -icount: instructions, not cycles or time)",
            "cycles": " (DWT CYCCNT)", "time": " (wall clock)"}.get(lat["kind"], "")
    return f"{_num(lat['median'])} {lat['unit']} median, p90 {_num(lat['p90'])}{note}"


def summary_rows(report: dict) -> list[tuple[str, str]]:
    r, mem = report["result"], report["memory"]
    rows = [("target", f"{report['target']} ({report['board']['board']}, runtime {report['board']['runtime_version']})"),
            ("model", f"{report['model']} {report['method']} {report['bits']}"),
            ("images", f"{r['images']} ({r['data']})")]
    if r["top1_board"] is not None:
        rows.append(("top-1 on board", f"{r['top1_board']:.2f}%  (host integer reference {r['top1_reference']:.2f}%)"))
    exact = f"{r['bit_exact_fraction']:.4f}"
    if r["bit_exact_fraction"] < 1.0 and "max_abs_diff_codes" in r:
        exact += (f"  (largest output difference {r['max_abs_diff_codes']} codes, top-1 agreement with the host "
                  f"{100 * r['top1_agreement']:.2f}%)")
    rows += [("bit-exact with host", exact),
             ("latency", latency_line(r)),
             ("model (flash)" if report["delivery"] == "flash" else "model (RAM)",
              f"{mem['model_bytes']:,} B of {mem['model_capacity']:,} B"),
             ("arena", f"{mem['arena_bytes']:,} B planned + {mem['io_bytes']:,} B input/output/profile, of "
                       f"{mem['arena_capacity']:,} B")]
    if mem.get("firmware"):
        fw = mem["firmware"]
        rows.append(("firmware", f"text {fw['text']:,} B, data {fw['data']:,} B, bss {fw['bss']:,} B"))
    rows.append(("model delivered", report["delivery"]))
    return rows


def format_table(report: dict, top_ops: int = 8) -> str:
    rows = summary_rows(report)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    ops = report["result"]["ops"][:top_ops]
    if ops:
        lines.append("")
        lines.append(f"{'op':<22}{'count':>6}{'share':>8}")
        lines += [f"{o['op']:<22}{o['count']:>6}{100 * o['share']:>7.1f}%" for o in ops]
    return "\n".join(lines)


def to_markdown(report: dict, plot_name: str | None = None) -> str:
    r = report["result"]
    unit = r["latency"]["unit"]
    lines = [f"# tsptq-deploy: {report['model']} on {report['target']}", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(report)]
    lines += ["", "## Where the time goes (one inference, per op type)", "",
              f"| op | count | {unit} | share |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {o['op']} | {o['count']} | {_num(o[unit])} | {100 * o['share']:.1f}% |" for o in r["ops"]]
    if plot_name:
        lines += ["", f"![per-op time]({plot_name})"]
    if r["mismatched_images"]:
        lines += ["", f"Images whose output differs from the host reference: {r['mismatched_images']}"]
    return "\n".join(lines) + "\n"


def plot_ops(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["result"]
    ops = list(reversed(r["ops"]))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ops) + 1.4))
    bars = ax.barh([o["op"] for o in ops], [100 * o["share"] for o in ops], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{100 * o['share']:.1f}%" for o in ops], fontsize=8, padding=2)
    ax.set_xlabel(f"% of one inference (median {_num(r['latency']['median'])} {r['latency']['unit']})", fontsize=8)
    ax.set_title(f"{report['model']} on {report['target']}: time per op type", fontsize=10)
    ax.set_xlim(0, max(100 * o["share"] for o in ops) * 1.2 if ops else 1)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def write_reports(report: dict, json_path: str | None, out_dir: str | None) -> list[str]:
    """JSON where asked; report.md + ops.png in out_dir (created). Returns the paths written."""
    import json

    written = []
    if json_path:
        atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
        written.append(json_path)
    if out_dir:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        plot = d / "ops.png"
        if report["result"]["ops"]:
            plot_ops(report, plot)
            written.append(str(plot))
        md = d / "report.md"
        atomic_write(md, lambda tmp: tmp.write_text(to_markdown(report, plot.name if report["result"]["ops"] else None)))
        written.append(str(md))
    return written
