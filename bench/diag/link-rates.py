#!/usr/bin/env python3
"""Reads link-rates.sh samples. Prints, per interval, each host's download/upload Mbit/s
(host 0 is the origin), then each peer's lag: MiB the origin has sent minus MiB the peer
has received, the swarm-wide backlog that becomes the tail once the seed is done.

usage: link-rates.py SAMPLES [interval_s]"""
import collections
import sys


def main():
    rows = [line.split() for line in open(sys.argv[1])]
    step = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    by = collections.defaultdict(list)
    for t, dev, rx, tx in rows:
        if dev[-1].isdigit():
            by[dev].append((float(t), int(rx), int(tx)))
    devs = sorted(by, key=lambda d: int(d[len(d.rstrip("0123456789")):]))
    origin = devs[0]
    t0 = by[origin][0][0]
    tmax = max(v[-1][0] for v in by.values())
    print("t_s   " + " ".join(f"{'h' + d[len(d.rstrip('0123456789')):]:>9}" for d in devs) + "   (down/up Mbit/s)")
    t = t0
    while t < tmax:
        line = f"{t - t0:5.1f} "
        for d in devs:
            a = [x for x in by[d] if t <= x[0] < t + step]
            if len(a) >= 2:
                dt = a[-1][0] - a[0][0]
                down = (a[-1][2] - a[0][2]) * 8 / dt / 1e6
                up = (a[-1][1] - a[0][1]) * 8 / dt / 1e6
                line += f" {down:3.0f}/{up:3.0f}  "
            else:
                line += " " * 11
        print(line)
        t += step
    print("\nt_s   origin_sent_MiB  lag per peer (MiB)")
    base = {d: by[d][0] for d in devs}
    t = t0
    while t < tmax:
        sent = [x for x in by[origin] if x[0] <= t]
        s = (sent[-1][1] - base[origin][1]) / 2**20 if sent else 0
        line = f"{t - t0:5.1f} {s:9.0f}      "
        for d in devs[1:]:
            pts = [x for x in by[d] if x[0] <= t]
            got = (pts[-1][2] - base[d][2]) / 2**20 if pts else 0
            line += f" {s - got:5.0f}"
        print(line)
        t += step


if __name__ == "__main__":
    main()
