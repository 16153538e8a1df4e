#!/usr/bin/env python3
"""Plots a spargo run's per-domain training curves from RUN_DIR/metrics.jsonl into RUN_DIR/curves.png.

Usage: scripts/plot_run.py RUN_DIR [--output FILE] [--smooth N]

Four panels over GRPO steps, one line per domain: mean reward, accuracy, tool calls per sample (agent episodes)
and mean response length in tokens (tool-result tokens included). Held-out results before and after GRPO from
RUN_DIR/summary.json, when present, are printed in the panel titles' legend. Needs matplotlib (Debian:
python3-matplotlib); draws without a display (Agg backend).
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("reward_mean", "reward (mean)"),
    ("accuracy", "accuracy"),
    ("tool_calls_mean", "tool calls per sample"),
    ("response_length_mean", "response length (tokens)"),
]


def read_metrics(path):
    steps = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                steps.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{number}: not JSON ({e})")
    return steps


def smooth(values, n):
    if n <= 1:
        return values
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - n + 1):i + 1] if v is not None]
        out.append(sum(window) / len(window) if window else None)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--output", help="PNG to write (default RUN_DIR/curves.png)")
    parser.add_argument("--smooth", type=int, default=1, help="moving average over N steps (default 1: none)")
    args = parser.parse_args()
    metrics_path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        raise SystemExit(f"{metrics_path}: no such file (is {args.run_dir} a spargo run directory?)")
    steps = read_metrics(metrics_path)
    if not steps:
        raise SystemExit(f"{metrics_path}: no GRPO steps recorded yet")
    domains = sorted({d for s in steps for d in s.get("domains", {})})
    summary = {}
    summary_path = os.path.join(args.run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (key, title) in zip(axes.flat, PANELS):
        for domain in domains:
            xs, ys = [], []
            for s in steps:
                d = s.get("domains", {}).get(domain)
                if d is None or d.get(key) is None:
                    continue
                xs.append(s["step"])
                ys.append(d[key])
            if xs:
                ax.plot(xs, smooth(ys, args.smooth), label=domain)
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    heldout = summary.get("heldout", {})
    notes = []
    for domain in domains:
        h = heldout.get(domain, {})
        before, after = h.get("before", {}), h.get("after", {})
        if before.get("accuracy") is not None and after.get("accuracy") is not None:
            notes.append(f"{domain} {before['accuracy']:.2f}->{after['accuracy']:.2f}")
    title = f"{os.path.basename(os.path.normpath(args.run_dir))}: {len(steps)} GRPO steps"
    if notes:
        title += "; held-out accuracy " + ", ".join(notes)
    fig.suptitle(title)
    fig.tight_layout()
    output = args.output or os.path.join(args.run_dir, "curves.png")
    fig.savefig(output, dpi=100)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
