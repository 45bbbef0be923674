#!/usr/bin/env python3
"""Draws deploy/grafana/awning.json's panels, laid out as in Grafana, from a
Prometheus server's data: the README's picture of the dashboard, made without
a Grafana server. Every panel runs the dashboard's own PromQL.

    render.py --prometheus http://127.0.0.1:9099 --out docs/dashboard.png [--minutes 5]

Needs matplotlib (pip install matplotlib). deploy/grafana/picture.sh produces
the data: the demo under mixed traffic, scraped by a local Prometheus.
"""

import argparse
import json
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import gridspec  # noqa: E402

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#96d98d", "#ffb357"]


def query(base, expr, start=None, end=None, step=None):
    if start is None:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    else:
        url = f"{base}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": step}
        )
    with urllib.request.urlopen(url, timeout=30) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise RuntimeError(f"{expr}: {doc}")
    return doc["data"]["result"]


def legend(fmt, labels):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def human(value, title):
    t = title.lower()
    if "ratio" in t:
        return f"{value * 100:.1f}%"
    if "bytes" in t:
        for unit in ["B", "KiB", "MiB", "GiB"]:
            if abs(value) < 1024:
                return f"{value:.1f} {unit}/s"
            value /= 1024
        return f"{value:.1f} TiB/s"
    return f"{value:,.1f}"


def expr_of(target, window):
    # The dashboard's variables: every instance.
    return target["expr"].replace('instance=~"$instance"', 'instance=~".*"').replace("[5m]", f"[{window}]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9099")
    ap.add_argument("--dashboard", default="deploy/grafana/awning.json")
    ap.add_argument("--out", default="docs/dashboard.png")
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rate-window", default="5m",
                    help="range of rate() and increase() (the dashboard's 5m; shorter for a short run)")
    args = ap.parse_args()

    dash = json.load(open(args.dashboard))
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    end = time.time()
    start = end - args.minutes * 60
    step = max(2, int(args.minutes * 60 / 150))

    fig = plt.figure(figsize=(20, rows * 0.42), facecolor=BG)
    grid = gridspec.GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=1.2,
                             top=0.97, bottom=0.03, left=0.03, right=0.99)
    fig.text(0.01, 0.99, f"{dash.get('title', 'awning')} (deploy/grafana/awning.json, last {args.minutes:g} min, rates over {args.rate_window})",
             color=TEXT, fontsize=14, ha="left", va="top")
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_facecolor(PANEL)
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.set_title(p["title"], color=TEXT, fontsize=10, loc="left")
        if p["type"] == "stat":
            result = query(args.prometheus, expr_of(p["targets"][0], args.rate_window))
            shown = human(float(result[0]["value"][1]), p["title"]) if result else "No data"
            ax.text(0.5, 0.45, shown, color="#73bf69" if result else GRID, fontsize=22,
                    ha="center", va="center", transform=ax.transAxes, fontweight="bold")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        n = 0
        for t in p["targets"]:
            for series in query(args.prometheus, expr_of(t, args.rate_window), start, end, step):
                xs = [(float(ts) - end) / 60 for ts, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, color=COLOURS[n % len(COLOURS)], linewidth=1.3,
                        label=legend(t.get("legendFormat"), series["metric"]))
                n += 1
        ax.tick_params(colors=TEXT, labelsize=7)
        ax.grid(color=GRID, linewidth=0.5)
        ax.set_xlabel("minutes", color=TEXT, fontsize=7)
        if n:
            ax.legend(fontsize=6, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="upper left",
                      ncol=2 if n > 6 else 1)
        else:
            ax.text(0.5, 0.5, "no data", color=GRID, ha="center", va="center", transform=ax.transAxes)
    fig.savefig(args.out, dpi=80, facecolor=BG, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
