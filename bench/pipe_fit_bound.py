"""How close the pipe diameter fit comes to what the data allow: the spread of circle_ml's diameter over seeds on a
100 mm pipe seen over 120 deg of arc (1600 points, as in tests/test_pipes.py), against the Cramer-Rao bound.

The bound is that of the easier problem where each point's angle on the circle is known (knowing it can only add
information, so it bounds the real one from below): for N points spread evenly over an arc of half-angle a with
isotropic noise sigma, sd(diameter) >= 2 sigma / sqrt(N) x sqrt(c2 / (c2 - c1^2)), c1 = sin(a)/a,
c2 = 1/2 + sin(2a)/(4a). Over 120 deg that is 11.2 sigma / sqrt(N): 4.2 mm at 1.5 cm noise, 5.6 mm at 2 cm. Prints the
ratio measured sd / bound; asserts nothing.

    python bench/pipe_fit_bound.py [seeds]
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bound(n: int, sigma: float, arc_deg: float) -> float:
    a = np.radians(arc_deg) / 2
    c1, c2 = np.sin(a) / a, 0.5 + np.sin(2 * a) / (4 * a)
    return 2 * sigma / np.sqrt(n) * np.sqrt(c2 / (c2 - c1 * c1))


def main(seeds: int = 12, n: int = 1600, diameter: float = 0.100, arc: float = 120.0):
    from pipeline.layers.pipes import circle_fit, circle_ml

    print(f"{'noise':>6} {'mean':>7} {'sd':>6} {'worst':>6} {'bound':>6} {'sd/bound':>9}   (diameter error, mm)")
    for sigma in (0.01, 0.015, 0.02):
        errs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            th = np.radians(90 + rng.uniform(-arc / 2, arc / 2, n))
            p = np.column_stack([np.cos(th), np.sin(th)]) * diameter / 2 + rng.normal(0, sigma, (n, 2))
            cx, cy, r = circle_fit(p)
            errs.append(2000 * circle_ml(p, cx, cy, r, sigma)[2] - 1000 * diameter)
        b = 1000 * bound(n, sigma, arc)
        print(f"{sigma * 100:5.1f}cm {np.mean(errs):+7.1f} {np.std(errs):6.1f} {np.max(np.abs(errs)):6.1f} {b:6.1f} "
              f"{np.std(errs) / b:9.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
