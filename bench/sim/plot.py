"""Plots of the scheduling simulator's results (bench/sim/run.ts writes results.json).

    .venv/bin/python bench/sim/plot.py bench/out/sim

ttft-cdf-<scenario>.png: the TTFT CDF of each policy (log time axis), one file per scenario at load 1;
gpu-seconds-vs-load.png: GPU-seconds against load for each policy (the load-sweep scenario).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads((out / "results.json").read_text())
    styles = {"thaw": "C0", "thaw-before": "C4", "serverlessllm": "C1", "least-loaded": "C2", "round-robin": "C3"}
    for scenario in sorted({r["scenario"] for r in rows}):
        runs = [r for r in rows if r["scenario"] == scenario and r["load"] == 1 and r.get("keepAliveSeconds", 300) == 300]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        # thaw last and thicker: it is drawn over the others where they coincide.
        for r in sorted(runs, key=lambda r: r["policy"] == "thaw"):
            xs = r["cdfS"]
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            thaw = r["policy"] == "thaw"
            ax.plot(xs, ys, label=f"{r['policy']} (p99 {r['p99TtftS']:.2f} s)", color=styles.get(r["policy"]), linewidth=2.2 if thaw else 1.2, zorder=3 if thaw else 2)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("time to first token (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"TTFT CDF — {scenario}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"ttft-cdf-{scenario}.png")
        plt.close(fig)
        print(f"wrote {out / f'ttft-cdf-{scenario}.png'}")

    # The CDFs compare policies at the default keep-alive; the trade-off plot shows the rest.
    for scenario in sorted({r["scenario"] for r in rows if r["scenario"].startswith("azure")}):
        runs = [r for r in rows if r["scenario"] == scenario and r["load"] == 1]
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        for policy, color in styles.items():
            pts = sorted((r["gpuSeconds"] / 3600, 100 * r["slo"], r["keepAliveSeconds"]) for r in runs if r["policy"] == policy)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=policy, linestyle="-" if len(pts) > 1 else "none")
            if len(pts) > 1:
                for x, y, ka in pts:
                    ax.annotate(f"{ka} s", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color=color)
        ax.set_xlabel("GPU-hours (a GPU holding at least one model)")
        ax.set_ylabel("requests with TTFT ≤ 1 s (%)")
        ax.set_title(f"SLO against GPU time — {scenario} (thaw at several keep-alives)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / f"slo-vs-gpu-{scenario}.png")
        plt.close(fig)
        print(f"wrote {out / f'slo-vs-gpu-{scenario}.png'}")

    sweep = [r for r in rows if r["scenario"] == "load-sweep"]
    if sweep:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        for policy in styles:
            pts = sorted((r["load"], r["gpuSeconds"] / r["simulatedSeconds"]) for r in sweep if r["policy"] == policy)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy, color=styles[policy])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("load (× the Azure conversation trace's request rate)")
        ax.set_ylabel("GPUs holding a model (GPU-seconds per second)")
        ax.set_title("GPU-seconds against load (256 agents, 1,000 models)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "gpu-seconds-vs-load.png")
        plt.close(fig)
        print(f"wrote {out / 'gpu-seconds-vs-load.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/sim"))
