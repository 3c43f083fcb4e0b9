"""国土基本図図郭 codes: the prefecture's published example, edges, and round trips over the whole zone."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import SheetError
from tiles.mapsheet import LEVELS, SIZE, neighbours, parse, sheet_bounds, sheet_code, sheet_codes


def test_prefectural_office():
    e, n = -10674, -113495
    assert sheet_code(e, n) == "08ND7783"
    assert sheet_code(e, n, 2500) == "08ND773"
    assert sheet_code(e, n, 1000) == "08ND774B"
    assert sheet_code(e, n, 5000) == "08ND77"
    assert sheet_code(e, n, 50000) == "08ND"
    assert sheet_bounds("08ND7783") == (-10800.0, -113700.0, -10400.0, -113400.0)


def test_design_example_sheet():
    # 08NF2330 as published by the prefecture: row N (13), column F (5), 5000 cell 2/3, 500 cell 3/0
    w, s, e, n = sheet_bounds("08NF2330")
    assert (w, n) == (-160000 + 5 * 40000 + 3 * 4000 + 0 * 400, 300000 - 13 * 30000 - 2 * 3000 - 3 * 300)
    assert (e - w, n - s) == (400, 300)
    assert sheet_code((w + e) / 2, (s + n) / 2) == "08NF2330"


def test_half_open_edges():
    w, s, e, n = sheet_bounds("08ND7783")
    assert sheet_code(w, n) == "08ND7783"  # north-west corner belongs to the sheet
    assert sheet_code(w, (s + n) / 2) == "08ND7783"  # west edge
    assert sheet_code((w + e) / 2, n) == "08ND7783"  # north edge
    assert sheet_code(e, (s + n) / 2) == "08ND7784"  # east edge belongs to the eastern neighbour
    assert sheet_code((w + e) / 2, s) == "08ND7793"  # south edge belongs to the southern neighbour
    assert sheet_code(e - 0.001, s + 0.001) == "08ND7783"


def test_vectorised_matches_scalar():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-159_999, 159_999, 2000), rng.uniform(-299_999, 299_999, 2000)
    codes = sheet_codes(x, y, 1000)
    assert [sheet_code(a, b, 1000) for a, b in zip(x[:50], y[:50])] == list(codes[:50])


@pytest.mark.parametrize("level", LEVELS)
def test_round_trip_grid(level):
    # code -> bounds -> centre -> code, on a regular sample covering the whole zone grid
    h, w = SIZE[level]
    xs = np.linspace(-160_000 + w / 2, 160_000 - w / 2, 37)
    ys = np.linspace(-300_000 + h / 2, 300_000 - h / 2, 41)
    gx, gy = np.meshgrid(xs, ys)
    for code in np.unique(sheet_codes(gx.ravel(), gy.ravel(), level)):
        w0, s0, e0, n0 = sheet_bounds(code)
        assert (e0 - w0, n0 - s0) == (w, h)
        assert sheet_code((w0 + e0) / 2, (s0 + n0) / 2, level) == code
        assert parse(code) == (8, level)


@settings(max_examples=300, deadline=None)
@given(st.floats(-160_000, 159_999.999), st.floats(-299_999.999, 300_000), st.sampled_from(LEVELS))
def test_point_inside_its_sheet(x, y, level):
    x, y = round(x, 3), round(y, 3)  # codes are decided at the tiles' millimetre precision
    code = sheet_code(x, y, level)
    w, s, e, n = sheet_bounds(code)
    assert w <= x < e and s < y <= n


def test_neighbours_and_errors():
    nb = neighbours("08ND7783")
    assert len(nb) == 8 and "08ND7784" in nb and "08ND7773" in nb and "08ND7782" in nb
    with pytest.raises(SheetError, match="outside the sheet grid"):
        sheet_code(200_000, 0)
    with pytest.raises(SheetError, match="not a"):
        sheet_bounds("08ZZ1234")
