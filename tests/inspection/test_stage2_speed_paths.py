"""Stage 2's quicker paths give what their plain counterparts give.

:mod:`tests.inspection.test_stage2_equivalence` compares the whole of stage 2 with the
original implementation on the committed model (16 x 16 defect maps). Here each quicker
step is checked against the plain one it stands for, including the cases that model never
produces: defect maps of other sizes (scaled across by one multiply, or cell by cell), masks
as wide as the float32 row sums allow, refinements that keep no pixel, ties in the decision
rule and every input type it accepts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import cv2
import numpy as np
import pytest

from inspection.synthetic import RenderParams, frame
from inspection.vision import pipeline as pipeline_module
from inspection.vision.model import OK_CLASS, ModelError, Prediction, Thresholds, VisionModel
from inspection.vision.model import default_model_paths as model_paths
from inspection.vision.pipeline import (
    _CELL_BYTES,
    _PRODUCT_MOMENTS_PX,
    _ROW_SUMS_F32_PX,
    CROP_PX,
    Localised,
    _cells_across,
    _cells_under,
    _cells_under_across,
    _measure,
    _moments,
)
from inspection.vision.screen import screen
from tests.inspection.test_stage2_equivalence import (
    DEFECTS,
    assert_same_stage2,
    flat_for,
    make_config,
    pipelines,
)


@pytest.fixture(scope="module")
def model():
    m = VisionModel.load(model_paths()[0], intra_op_threads=1)
    m.warm_up(batch=8)
    return m


# --------------------------------------------------------------------------- map cells


@pytest.mark.parametrize("cell", sorted(_CELL_BYTES))
def test_cells_scaled_across_give_the_cells_under_any_part(cell):
    # Given: maps of 0/1 cells tiling the crop with cells of 2, 4 and 8 pixels.
    rng = np.random.default_rng(cell)
    n = CROP_PX // cell
    maps = (rng.random((3, n, n)) < 0.3).astype(np.uint8)
    # When
    across = _cells_across(maps, cell)
    # Then: whole maps scaled across are the cells repeated along rows, and every part of
    # the crop gets the same cells as the plain scaling.
    assert across.shape == (3, n, CROP_PX) and across.dtype == np.uint8
    assert np.array_equal(across, np.repeat(maps, cell, axis=2))
    for _ in range(300):
        k = int(rng.integers(0, 3))
        y0, x0 = (int(v) for v in rng.integers(0, CROP_PX, 2))
        y1, x1 = int(rng.integers(y0 + 1, CROP_PX + 1)), int(rng.integers(x0 + 1, CROP_PX + 1))
        got = _cells_under_across(across[k], cell, y0, y1, x0, x1)
        assert np.array_equal(got, _cells_under(maps[k], cell, y0, y1, x0, x1))


def test_cells_scaled_across_from_a_strided_view():
    # Given: maps that are a view with gaps between them.
    rng = np.random.default_rng(8)
    cells = (rng.random((3, 20, 16)) < 0.2).astype(np.uint8)[:, 2:18]
    assert not cells.flags.c_contiguous
    # When / then
    assert np.array_equal(_cells_across(cells, 8), np.repeat(cells, 8, axis=2))


class ResizedMaps:
    """The committed model with its defect maps scaled to another size (what a model with
    finer or coarser maps would give)."""

    def __init__(self, model, size: int, *, only_corner: bool = False):
        self.model = model
        self.size = size
        self.only_corner = only_corner

    def predict(self, crops, *, out=None):
        preds, maps = self.model.predict(crops, out=out)
        size = self.size
        resized = np.zeros((len(maps), size, size), np.float32)
        for i, m in enumerate(maps):
            if self.only_corner:
                resized[i, 0, 0] = 1.0  # marks one cell, away from any crop's defect
            else:
                resized[i] = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
        return preds, resized


@pytest.mark.parametrize("size", [64, 32, 16, 8, 128, 12])
def test_stage2_with_maps_of_other_sizes_matches_the_cell_by_cell_path(model, monkeypatch, size):
    # Given: a frame dense with defects, and the model's maps at sizes whose cells are 2, 4,
    # 8, 16 or 1 pixels, or that do not tile the crop at all.
    kinds = [DEFECTS[k % 7] for k in range(14)]
    image, _ = frame(4096, 1024, seed=4901, defects=kinds, substrate="coating")
    flat = flat_for(4096, RenderParams())
    result = screen(image, flat=flat)
    fast, _ = pipelines(model, make_config(4096, 1024), flat)
    plain, _ = pipelines(model, make_config(4096, 1024), flat)
    fast.model = plain.model = ResizedMaps(model, size)
    scaled = []
    real = pipeline_module._cells_across
    monkeypatch.setattr(
        pipeline_module,
        "_cells_across",
        lambda cells, cell: scaled.append(cell) or real(cells, cell),
    )
    # When
    got = fast.stage2(image, result)
    monkeypatch.setattr(pipeline_module, "_CELL_BYTES", {})
    want = plain.stage2(image, result)
    # Then: the same defects; the maps whose cells are 2, 4 or 8 pixels took the quick way.
    assert assert_same_stage2(got, want) >= 8
    cell = CROP_PX // size
    assert scaled == ([cell] if size in (64, 32, 16) else [])
    for d, w in zip(got[1], want[1], strict=True):
        assert np.array_equal(d.mask, w.mask) and d.mask.dtype == w.mask.dtype == np.uint8
        assert (d.bbox, d.area_px, d.centroid, d.length_px) == (
            w.bbox,
            w.area_px,
            w.centroid,
            w.length_px,
        )


def test_a_map_that_keeps_no_pixel_of_a_defect_leaves_its_pixels_as_stage_1_saw_them(model):
    # Given: maps that mark only a corner cell of every crop, so no large defect keeps a pixel
    # when refined.
    kinds = [DEFECTS[k % 7] for k in range(14)]
    image, _ = frame(4096, 1024, seed=4902, defects=kinds, substrate="separator")
    flat = flat_for(4096, RenderParams())
    result = screen(image, flat=flat)
    pipe, _ = pipelines(model, make_config(4096, 1024), flat)
    pipe.model = ResizedMaps(model, 16, only_corner=True)
    # When
    _, found = pipe.stage2(image, result)
    # Then: every defect that is one stage-1 component (not merged) has its component's
    # fine pixels, measured as such.
    boxes = {c.box: c for c in result.candidates}
    checked = 0
    for d in found:
        h, w = d.mask.shape
        cand = boxes.get((d.x0, d.y0, d.x0 + w, d.y0 + h))
        if cand is None or cand.source not in ("fine", "line"):
            continue
        # (Skipping a box that reaches the marked corner of its crop.)
        cx0 = min(max(round(cand.centroid[0]) - CROP_PX // 2, 0), 4096 - CROP_PX)
        cy0 = min(max(round(cand.centroid[1]) - CROP_PX // 2, 0), 1024 - CROP_PX)
        if d.x0 < cx0 + 2 * CROP_PX // 16 and d.y0 < cy0 + 2 * CROP_PX // 16:
            continue
        assert np.array_equal(d.mask, result.fine_mask[d.y0 : d.y0 + h, d.x0 : d.x0 + w])
        again = dataclasses.replace(d)
        _measure(again)
        assert (d.bbox, d.area_px, d.centroid, d.length_px) == (
            again.bbox,
            again.area_px,
            again.centroid,
            again.length_px,
        )
        checked += max(w, h) > pipeline_module._MAP_REFINE_PX
    assert checked >= 3


# --------------------------------------------------------------------------- moments


def _cv2_moments(mask):
    m = cv2.moments(mask, binaryImage=True)
    return tuple(m[k] for k in ("m00", "m10", "m01", "m20", "m11", "m02"))


@pytest.mark.parametrize(
    "shape",
    [
        (1, 1),
        (5, 1),
        (1, 255),
        (3, _ROW_SUMS_F32_PX),
        (_PRODUCT_MOMENTS_PX // _ROW_SUMS_F32_PX, _ROW_SUMS_F32_PX),  # full, at both limits
        (4096, 16),
        (40, _ROW_SUMS_F32_PX + 1),  # beyond float32 row sums
        (200, 400),  # beyond the matrix products: OpenCV
    ],
)
def test_moments_are_the_exact_integer_sums(shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    for density in (0.0, 0.03, 0.5, 1.0):
        mask = (rng.random(shape) < density).astype(np.uint8)
        assert _moments(mask) == _cv2_moments(mask)
        # ... also for a view into a larger mask (stage 1's fine mask).
        big = np.zeros((shape[0] + 4, shape[1] + 9), np.uint8)
        big[2 : 2 + shape[0], 5 : 5 + shape[1]] = mask
        view = big[2 : 2 + shape[0], 5 : 5 + shape[1]]
        assert _moments(view) == _cv2_moments(mask)


def test_measure_is_box_and_moments_together():
    rng = np.random.default_rng(11)
    mask = (rng.random((37, 53)) < 0.2).astype(np.uint8)
    d = Localised("void", "act", 0.9, {}, mask, 100, 200, np.zeros((1, 1), np.uint8))
    _measure(d)
    n, m10, m01, *_ = _cv2_moments(mask)
    bx, by, bw, bh = cv2.boundingRect(mask)
    assert d.bbox == (100 + bx, 200 + by, 100 + bx + bw, 200 + by + bh)
    assert d.area_px == round(n)
    assert d.centroid == (100 + m10 / n, 200 + m01 / n)


# --------------------------------------------------------------------------- decisions


def plain_decide(thresholds: Thresholds, probs) -> list[Prediction]:
    """The rule as the model's documentation states it, one row at a time."""
    classes = thresholds.classes
    ok = classes.index(OK_CLASS)
    defects = [i for i, c in enumerate(classes) if c != OK_CLASS]
    out = []
    for row in np.asarray(probs, np.float64).tolist():
        p = dict(zip(classes, row, strict=True))
        if 1.0 - row[ok] < thresholds.ok_decision:
            out.append(Prediction(OK_CLASS, row[ok], p, "log"))
            continue
        k = defects[0]
        for i in defects[1:]:
            if row[i] > row[k]:
                k = i
        pos = defects.index(k)
        q = row[k]
        high, low = thresholds.high[pos], thresholds.low[pos]
        out.append(
            Prediction(classes[k], q, p, "act" if q >= high else "review" if q >= low else "log")
        )
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
def test_decide_gives_what_the_rule_says_for_every_row(model, dtype):
    # Given: rows of every kind: ok and defect calls, ties between defect classes, values
    # at the thresholds themselves.
    th = model.thresholds
    rng = np.random.default_rng(3)
    rows = list(rng.dirichlet(np.full(len(th.classes), 0.4), 200))
    defects = [i for i, c in enumerate(th.classes) if c != OK_CLASS]
    ok = th.classes.index(OK_CLASS)
    for a, b in itertools.combinations(defects, 2):  # a tie between two defect classes
        row = np.zeros(len(th.classes))
        row[[a, b]] = 0.4
        row[ok] = 0.2
        rows.append(row)
    for pos, k in enumerate(defects):  # exactly at high and at low
        for value in (th.high[pos], th.low[pos]):
            row = np.zeros(len(th.classes))
            row[k] = value
            row[ok] = 1.0 - value
            rows.append(row)
    probs = np.array(rows).astype(dtype)
    # When
    got = th.decide(probs)
    want = plain_decide(th, probs)
    # Then: equal predictions, fields of the same types, as immutable as ever.
    assert got == want
    for g, w in zip(got, want, strict=True):
        assert type(g) is Prediction
        assert [type(v) for v in vars(g).values()] == [type(v) for v in vars(w).values()]
        assert repr(g) == repr(w)
        assert g.is_defect == (g.cls != OK_CLASS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].band = "act"
    assert {p.band for p in got} == {"act", "review", "log"}


def test_decide_refuses_what_it_refused_before(model):
    th = model.thresholds
    c = len(th.classes)
    for bad in (
        np.full((2, c), math.nan, np.float32),
        np.full((2, c), math.inf),
        np.zeros((2, c + 1)),
        np.zeros(c),
        np.zeros((2, c), np.int64),
    ):
        with pytest.raises(ModelError) as err:
            th.decide(bad)
        assert err.value.code == "bad_input"
    assert th.decide(np.zeros((0, c), np.float32)) == []
