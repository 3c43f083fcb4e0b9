"""Nightly batch benchmark: the demo survey through `pcpipe nightly` (every layer, local publishing, report), then a
second night with nothing new. Prints both wall times, the second against the issue's budget of 3 s, and whether
the second night changed any file (it must not); asserts nothing.

    python bench/nightly_bench.py [OUT_DIR]
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[p] = (os.path.getmtime(p), hashlib.sha256(fh.read()).hexdigest())
    return out


def main():
    from pipeline.synthetic.demo import make_survey, nightly_config

    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nightly-bench-")
    survey = make_survey(out)
    cfg = nightly_config(out, survey["files"], workers=2)
    cmd = [sys.executable, "-m", "pipeline", "nightly", "--config", cfg, "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    first = time.perf_counter() - t0
    before = snapshot(os.path.join(out, "tiles"))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    second = time.perf_counter() - t0
    changed = sorted(set(before.items()) ^ set(snapshot(os.path.join(out, "tiles")).items()))
    print(f"first night (demo survey, all layers, publish, report): {first:6.1f} s  (budget 180 s: "
          f"{first / 180:.2f})")
    print(f"second night, nothing new:                            {second:6.2f} s  (budget 3 s: "
          f"{second / 3:.2f}) -> {r.stdout.strip()}")
    print(f"files changed by the second night: {len(changed)}")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
