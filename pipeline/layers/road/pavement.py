"""Pavement indices of 舗装点検要領 (MLIT 2016) from profiles: IRI by the quarter-car, rut depth by the
straightedge (upper envelope), flatness sigma of the 3 m profilometer, MCI and the class I/II/III.

IRI follows Sayers (1995), "On the calculation of International Roughness Index from longitudinal road profile",
TRR 1501 (also ASTM E1926): the golden car at 80 km/h on the profile's slope, after a 250 mm moving average,
started from the mean slope of the first 11 m, simulated with the exact discrete state transition."""
from __future__ import annotations

import numpy as np

GOLDEN_CAR = {"k1": 653.0, "k2": 63.3, "c": 6.0, "mu": 0.15}  # per unit sprung mass: tyre, spring, damper, mass
SPEED = 80.0 / 3.6  # m/s
BASE = 0.25  # m, moving-average base length of the profile
LEAD_IN = 11.0  # m, initial slope taken over the first 11 m (0.5 s at 80 km/h)


def _matrices(car=GOLDEN_CAR):
    k1, k2, c, mu = car["k1"], car["k2"], car["c"], car["mu"]
    a = np.array([[0, 1, 0, 0], [-k2, -c, k2, c], [0, 0, 0, 1], [k2 / mu, c / mu, -(k1 + k2) / mu, -c / mu]])
    b = np.array([0, 0, 0, k1 / mu])
    return a, b


def quarter_car_gain(wavelength, car=GOLDEN_CAR, speed=SPEED) -> np.ndarray:
    """|H|: amplitude of the suspension rate (slope units) per unit amplitude of input slope, for sinusoids of
    the given wavelengths (m), from the continuous transfer function (no time stepping)."""
    a, b = _matrices(car)
    c = np.array([1.0, 0, -1.0, 0])
    w = 2 * np.pi * speed / np.atleast_1d(np.asarray(wavelength, float))
    return np.array([abs(c @ np.linalg.solve(1j * wi * np.eye(4) - a, b)) for wi in w])


def rectified_slope(z: np.ndarray, dx: float, car=GOLDEN_CAR, speed=SPEED) -> np.ndarray:
    """Rectified suspension rate (mm/m) of the quarter-car at every sample of an evenly sampled profile z (metres,
    spacing dx), NaN for the last samples of the 250 mm base. The IRI of any stretch is the mean over its samples,
    so sections of one long profile are read off one run of the car (no restart from rest at each section)."""
    from scipy.linalg import expm
    from scipy.signal import dlsim

    z = np.asarray(z, float)
    k = max(1, int(round(BASE / dx)))
    if len(z) <= k + 1:
        raise ValueError(f"profile of {len(z)} samples at {dx} m is too short for IRI")
    slope = (z[k:] - z[:-k]) / (k * dx)  # 250 mm moving average of the slope, as Sayers' code does
    a, b = _matrices(car)
    dt = dx / speed
    st = expm(a * dt)
    pr = np.linalg.solve(a, (st - np.eye(4)) @ b)
    i11 = min(len(z) - 1, int(round(LEAD_IN / dx)))
    s0 = (z[i11] - z[0]) / (i11 * dx)
    _, out, _ = dlsim((st, pr[:, None], np.array([[1.0, 0, -1.0, 0]]), np.zeros((1, 1)), dt), slope,
                      x0=np.array([s0, 0, s0, 0]))
    return np.r_[np.abs(out[:, 0]) * 1000.0, np.full(k, np.nan)]


def iri(z: np.ndarray, dx: float, car=GOLDEN_CAR, speed=SPEED) -> float:
    """IRI (mm/m = m/km) of an evenly sampled profile z (metres, spacing dx metres)."""
    return float(np.nanmean(rectified_slope(z, dx, car, speed)))


def rectified_with_gaps(z: np.ndarray, dx: float) -> np.ndarray:
    """rectified_slope over each run of a profile between NaN gaps (runs shorter than 11 m are left NaN: the car
    has not settled)."""
    out = np.full(len(z), np.nan)
    ok = ~np.isnan(z)
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(int), 0]))
    for i, j in zip(edges[::2], edges[1::2]):
        if (j - i) * dx >= LEAD_IN:
            out[i:j] = rectified_slope(z[i:j], dx)
    return out


def noise_iri(sigma_m: float, dx: float) -> float:
    """IRI (mm/m) that white measurement noise of std sigma_m (metres) on every sample adds on its own: the car
    is linear, so its output is the profile's plus the noise's, and for noise the rectified mean is proportional
    to sigma. Measured once per spacing on a fixed-seed unit-noise profile of 5 km."""
    return _unit_noise_iri(round(dx, 6)) * sigma_m


_NOISE_CACHE: dict = {}


def _unit_noise_iri(dx: float) -> float:
    if dx not in _NOISE_CACHE:
        n = np.random.default_rng(0).normal(0.0, 1.0, int(5000 / dx))
        _NOISE_CACHE[dx] = iri(n, dx)
    return _NOISE_CACHE[dx]


def iri_noise_corrected(measured: float, noise: float) -> float:
    """Profile IRI with the noise's share removed in quadrature (outputs of independent inputs add in variance;
    rectified means of near-Gaussian outputs are proportional to their std)."""
    return float(np.sqrt(max(measured ** 2 - noise ** 2, 0.0)))


def rut_depth(offset: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Rut depth (mm) of one transverse profile of a lane by the straightedge/envelope method: the upper convex
    hull is where a straightedge laid across the lane rests; the depth is the largest gap under it, for the left
    (offset < 0) and right (offset >= 0) wheel path. NaN samples are ignored."""
    ok = ~np.isnan(z)
    t, h = np.asarray(offset, float)[ok], np.asarray(z, float)[ok]
    if len(t) < 3:
        return float("nan"), float("nan")
    hull = [0]
    for i in range(1, len(t)):  # monotone chain, upper hull
        while len(hull) >= 2:
            o, p = hull[-2], hull[-1]
            if (t[p] - t[o]) * (h[i] - h[o]) - (h[p] - h[o]) * (t[i] - t[o]) >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    env = np.interp(t, t[hull], h[hull])
    gap = (env - h) * 1000.0
    left, right = gap[t < 0], gap[t >= 0]
    return (float(left.max()) if len(left) else float("nan"), float(right.max()) if len(right) else float("nan"))


def flatness_sigma(z: np.ndarray, dx: float) -> float:
    """Flatness (平坦性) sigma (mm) of a longitudinal profile as the 3 m profilometer gives it: the height at the
    middle against the line through the ends, read every 1.5 m; NaN where the profile has gaps."""
    z = np.asarray(z, float)
    h = int(round(1.5 / dx))
    if len(z) < 2 * h + 1:
        return float("nan")
    mid = np.arange(h, len(z) - h, h)
    d = z[mid] - (z[mid - h] + z[mid + h]) / 2
    d = d[~np.isnan(d)]
    return float(np.std(d) * 1000.0) if len(d) >= 3 else float("nan")


def mci(crack: float | None, rut: float, sigma: float | None, coef: dict) -> dict:
    """MCI and its variants (舗装の維持修繕ガイドブック): each is 10 - sum of a * value^p over the terms it uses;
    a variant that needs a value that was not measured is left out. The MCI reported is the minimum."""
    values = {"crack": crack, "rut": rut, "sigma": sigma}
    out = {}
    for name, terms in coef.items():
        if any(values[k] is None or np.isnan(values[k]) for k in terms):
            out[name] = None
            continue
        out[name] = round(10.0 - sum(a * max(values[k], 0.0) ** p for k, (a, p) in terms.items()), 2)
    known = [v for v in out.values() if v is not None]
    out["mci_min"] = min(known) if known else None
    return out


def inspection_class(crack: float | None, rut: float | None, iri_: float | None, bounds: dict) -> dict:
    """舗装点検要領 class per index (I: sound, II: repair advisable, III: repair needed) and overall (the worst)."""
    out = {}
    for name, value in (("crack", crack), ("rut", rut), ("iri", iri_)):
        if value is None or np.isnan(value):
            out[name] = None
            continue
        lo, hi = bounds[name]
        out[name] = "I" if value < lo else ("II" if value < hi else "III")
    known = [v for v in out.values() if v]
    out["overall"] = max(known, key=len) if known else None
    return out
