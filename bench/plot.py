#!/usr/bin/env python3
"""Charts from odonata-bench JSON lines: time to all-done against N (one line per system,
one chart per file size and link setting) and a per-peer completion CDF for the largest N."""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path, out_dir):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if not r.get("skipped"):
                    recs.append(r)
    if not recs:
        print("plot.py: no runs to draw")
        return
    groups = defaultdict(list)
    for r in recs:
        groups[(r["file_bytes"], r["peer_mbit"], r["origin_mbit"], r["delay_ms"])].append(r)
    for (size, pm, om, delay), rs in sorted(groups.items()):
        tag = f"{size >> 20}MiB-{pm}M-origin{om}M-{delay}ms"
        title = f"F={size >> 20} MiB, peers {pm} Mbit/s, origin {om} Mbit/s, delay {delay} ms"
        # Last record wins for a repeated (system, N).
        by_sys = defaultdict(dict)
        bound = {}
        for r in rs:
            by_sys[r["system"]][r["peers"]] = r
            bound[r["peers"]] = r["lower_bound_s"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system, runs in sorted(by_sys.items()):
            ns = sorted(n for n, r in runs.items() if r.get("all_done_s") is not None)
            ax.plot(ns, [runs[n]["all_done_s"] for n in ns], marker="o", label=system)
        ns = sorted(bound)
        ax.plot(ns, [bound[n] for n in ns], "k--", label="lower bound T")
        ax.set_xlabel("peers N")
        ax.set_ylabel("time until all peers are done (s)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{out_dir}/alldone-{tag}.png", dpi=110)
        plt.close(fig)

        nmax = max(n for runs in by_sys.values() for n in runs)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system, runs in sorted(by_sys.items()):
            r = runs.get(nmax)
            if not r:
                continue
            ts = sorted(t for t in r["per_peer_s"] if t is not None)
            if not ts:
                continue
            ys = [(i + 1) / r["peers"] for i in range(len(ts))]
            ax.step(ts, ys, where="post", label=system)
        if nmax in bound:
            ax.axvline(bound[nmax], color="k", linestyle="--", label="lower bound T")
        ax.set_xlabel("completion time (s)")
        ax.set_ylabel("fraction of peers done")
        ax.set_title(f"{title}, N={nmax}", fontsize=9)
        ax.set_xlim(left=0)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{out_dir}/cdf-{tag}-n{nmax}.png", dpi=110)
        plt.close(fig)
        print(f"plot.py: wrote {out_dir}/alldone-{tag}.png and cdf-{tag}-n{nmax}.png")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS.jsonl OUT_DIR")
    main(sys.argv[1], sys.argv[2])
