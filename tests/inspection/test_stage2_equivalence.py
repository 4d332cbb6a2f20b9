"""Stage 2 of the vision worker computes what it always computed.

:meth:`Pipeline.stage2` (crops around the stage-1 candidates with flat-field correction, the
model in batches, each defect's pixels from the model's defect map, merging) is written for
speed. The reference here is the straightforward implementation it replaced, kept verbatim:
a crop at a time, OpenCV per defect, the model wrapper's own conversion and decision rule.
Both run on the same frames from the frame generator (coating and separator, base and
shifted rendering, with and without a flat field, batch sizes that split a frame's crops)
and must agree:

* crops (the model's input and the evidence), classes, bands, masks, boxes, areas and coil
  positions exactly;
* probabilities and confidences within 1e-6 (the same session on the same input; float32
  outputs);
* centroids and lengths within 1e-9 px (sums of the same integer moments);
* the emitted payloads: every field equal, rounded floats within one unit of the place they
  are rounded to, decisions and verdicts exactly.

The reference counts the branches it takes, and each test asserts the ones its frames are
there for (a merge, a mask the defect map refined, a box beyond its crop, a clamped crop,
streak, coarse and line candidates, a dark offset, partial batches), so frames that stopped
exercising one fail here instead of passing silently.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from inspection.management.commands.vision_frames import commissioning_flat_field
from inspection.synthetic import CLASSES, RenderParams, frame
from inspection.vision.model import OK_CLASS, ModelError, Prediction, VisionModel
from inspection.vision.model import default_model_paths as model_paths
from inspection.vision.pipeline import (
    CROP_PX,
    Frame,
    FrameHeader,
    Localised,
    ModelIdentity,
    Pipeline,
    WorkerConfig,
    _cells_under,
    _measure,
)
from inspection.vision.rules import parse
from inspection.vision.screen import Candidate, FlatField, ScreenResult, StreakReference, screen

DEFECTS = [c for c in CLASSES if c != "ok"]
PITCH_UM = 20.0
COUNTS_PER_M = 100_000
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
#: Below these sizes nothing is reported; above them quarantine or stop: every decision
#: (ignore, review, quarantine, stop) occurs in the run of frames the envelopes come from.
RULES = {
    "classes": {
        "pinhole": {"min_size_um": 150, "quarantine_size_um": 300, "stop_size_um": 600},
        "particle": {"min_size_um": 100, "quarantine_size_um": 250, "stop_size_um": 500},
        "void": {"quarantine_size_um": 400, "stop_size_um": 900},
        "scratch": {"quarantine_size_um": 1500, "stop_size_um": 6000},
        "crack": {"quarantine_size_um": 500, "stop_size_um": 3000},
    }
}
#: Branches of the reference taken (each test checks the ones it needs by their increase).
TAKEN: Counter = Counter()


def taken_since(before: Counter) -> set[str]:
    return {k for k, v in TAKEN.items() if v > before[k]}


# --------------------------------------------------------------------------- the reference
# The stage-2 implementation before it was vectorised, unchanged but for names: one crop
# at a time, the fixed-point flat field per batch, the model wrapper's astype and decision
# rule, OpenCV per defect.

_MAP_REFINE_PX = 24


@dataclass
class RefLocalised:
    cls: str
    band: str
    confidence: float
    probabilities: dict[str, float]
    mask: np.ndarray
    x0: int
    y0: int
    crop: np.ndarray
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    area_px: int = 0
    length_px: float = 0.0
    centroid: tuple[float, float] = (0.0, 0.0)


def ref_measure(d: RefLocalised) -> None:
    bx, by, bw, bh = cv2.boundingRect(d.mask)
    d.bbox = (d.x0 + bx, d.y0 + by, d.x0 + bx + bw, d.y0 + by + bh)
    m = cv2.moments(d.mask, binaryImage=True)
    n = m["m00"]
    d.area_px = round(n)
    if n < 1:
        d.centroid = (d.x0 + bx + bw / 2.0, d.y0 + by + bh / 2.0)
        d.length_px = 0.0
        return
    d.centroid = (d.x0 + m["m10"] / n, d.y0 + m["m01"] / n)
    a, b, c = m["mu20"] / n, m["mu11"] / n, m["mu02"] / n
    major = (a + c) / 2.0 + math.sqrt(((a - c) / 2.0) ** 2 + b * b)
    d.length_px = math.sqrt(12.0 * major) + 1.0


def ref_merge_overlapping(found: list[RefLocalised]) -> list[RefLocalised]:
    for d in found:
        ref_measure(d)
    merged = len(found) > 1
    while merged:
        merged = False
        found.sort(key=lambda d: d.bbox[0])
        for i in range(len(found)):
            a = found[i]
            for j in range(i + 1, len(found)):
                b = found[j]
                if b.bbox[0] > a.bbox[2]:
                    break
                if a.cls != b.cls or a.bbox[1] > b.bbox[3] or b.bbox[1] > a.bbox[3]:
                    continue
                keep, drop = (a, b) if a.confidence >= b.confidence else (b, a)
                x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
                x1 = max(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
                y1 = max(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
                union = np.zeros((y1 - y0, x1 - x0), np.uint8)
                for d in (a, b):
                    hh, ww = d.mask.shape
                    view = union[d.y0 - y0 : d.y0 - y0 + hh, d.x0 - x0 : d.x0 - x0 + ww]
                    np.bitwise_or(view, d.mask, out=view)
                keep.mask, keep.x0, keep.y0 = union, x0, y0
                ref_measure(keep)
                found.remove(drop)
                TAKEN["merge"] += 1
                merged = True
                break
            if merged:
                break
    return found


def ref_decide(thresholds, probs: np.ndarray) -> list[Prediction]:
    probs = np.asarray(probs)
    ok_idx = thresholds.classes.index(OK_CLASS)
    defect_idx = np.array([i for i, c in enumerate(thresholds.classes) if c != OK_CLASS])
    rows = probs.astype(np.float64)
    p_ok = rows[:, ok_idx]
    defects = rows[:, defect_idx]
    j = defects.argmax(axis=1)
    q = defects[np.arange(rows.shape[0]), j]
    band = np.where(
        q >= np.asarray(thresholds.high)[j],
        "act",
        np.where(q >= np.asarray(thresholds.low)[j], "review", "log"),
    )
    is_ok = 1.0 - p_ok < thresholds.ok_decision
    names = [thresholds.classes[i] for i in defect_idx]
    out = []
    for i, row in enumerate(rows.tolist()):
        p = dict(zip(thresholds.classes, row, strict=True))
        if is_ok[i]:
            out.append(Prediction(OK_CLASS, row[ok_idx], p, "log"))
        else:
            out.append(Prediction(names[j[i]], row[defect_idx[j[i]]], p, str(band[i])))
    return out


def ref_predict(model: VisionModel, crops: np.ndarray):
    x = crops.astype(np.float32)[:, None]
    if x.shape[0] == 0:
        h, w = model.map_size
        return [], np.zeros((0, h, w), np.float32)
    probs, maps = model._session.run(["probs", "defect_map"], {"image": x})
    return ref_decide(model.thresholds, probs), maps[:, 0]


def ref_crops(flat: FlatField, image: np.ndarray, result: ScreenResult):
    gain_q = np.clip(np.rint(flat.gain * 128), 1, 256).astype(np.uint16)
    offset_q = (
        np.clip(np.rint(flat.offset), 0, 255).astype(np.uint16) if flat.offset.any() else None
    )
    h, w = image.shape
    s = CROP_PX
    n = len(result.candidates)
    crops = np.empty((n, s, s), np.uint8)
    origins = []
    for i, cand in enumerate(result.candidates):
        cx, cy = cand.centroid
        x0 = int(min(max(round(cx) - s // 2, 0), w - s))
        y0 = int(min(max(round(cy) - s // 2, 0), h - s))
        if x0 != round(cx) - s // 2 or y0 != round(cy) - s // 2:
            TAKEN["clamped"] += 1
        crops[i] = image[y0 : y0 + s, x0 : x0 + s]
        origins.append((x0, y0))
    if n and not flat.is_identity:
        TAKEN["flat"] += 1
        cols = np.array([x0 for x0, _ in origins])[:, None] + np.arange(s)[None, :]
        work = crops.astype(np.uint16)
        if offset_q is not None:
            TAKEN["offset"] += 1
            off = offset_q[cols][:, None, :]
            np.maximum(work, off, out=work)
            work -= off
        work *= gain_q[cols][:, None, :]
        work += 64
        work >>= 7
        np.minimum(work, 255, out=work)
        crops = work.astype(np.uint8)
    return crops, origins


def ref_localise(cand, origin, cells_marked, result: ScreenResult):
    x0, y0, x1, y1 = cand.box
    TAKEN[f"source:{cand.source}"] += 1
    if cand.source == "streak":
        return np.ones((y1 - y0, x1 - x0), np.uint8), x0, y0
    region = result.fine_mask[y0:y1, x0:x1]
    if cand.source == "coarse":
        blocks = result.coarse_mask[y0 // 4 : (y1 + 3) // 4, x0 // 4 : (x1 + 3) // 4]
        region = np.repeat(np.repeat(blocks, 4, 0), 4, 1)[
            y0 % 4 : y0 % 4 + (y1 - y0), x0 % 4 : x0 % 4 + (x1 - x0)
        ].view(np.uint8)
        if not region.any():
            TAKEN["coarse_ones"] += 1
            region = np.ones((y1 - y0, x1 - x0), np.uint8)
    cx0, cy0 = origin
    ix0, iy0 = max(x0, cx0), max(y0, cy0)
    ix1, iy1 = min(x1, cx0 + CROP_PX), min(y1, cy0 + CROP_PX)
    small = (x1 - x0) <= _MAP_REFINE_PX and (y1 - y0) <= _MAP_REFINE_PX
    TAKEN["small" if small else "large"] += 1
    if not small and cells_marked is not None and ix1 > ix0 and iy1 > iy0:
        cells = cv2.resize(cells_marked, (CROP_PX, CROP_PX), interpolation=cv2.INTER_NEAREST)
        part = region[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        kept = part & cells[iy0 - cy0 : iy1 - cy0, ix0 - cx0 : ix1 - cx0]
        if kept.any():
            TAKEN["refined"] += 1
            if (kept != part).any():
                TAKEN["refined_changed"] += 1
            if (ix1 - ix0, iy1 - iy0) != (x1 - x0, y1 - y0):
                TAKEN["box_beyond_crop"] += 1
            region = region.copy()
            region[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = kept
        else:
            TAKEN["refine_empty"] += 1
    elif not small and cells_marked is None:
        TAKEN["map_unmarked"] += 1
    return region, x0, y0


def ref_stage2(pipe: Pipeline, model: VisionModel, image: np.ndarray, result: ScreenResult):
    crops, origins = ref_crops(pipe.flat, image, result)
    preds, maps = [], []
    b = pipe.config.batch_size
    for i in range(0, crops.shape[0], b):
        TAKEN["batch"] += 1
        p, m = ref_predict(model, crops[i : i + b])
        preds.extend(p)
        maps.append(m)
    dmaps = np.concatenate(maps) if maps else np.zeros((0, 16, 16), np.float32)
    hit = dmaps > 0.5
    grown = hit.copy()
    grown[:, 1:] |= hit[:, :-1]
    grown[:, :-1] |= hit[:, 1:]
    wide = grown.copy()
    wide[:, :, 1:] |= grown[:, :, :-1]
    wide[:, :, :-1] |= grown[:, :, 1:]
    any_marked = wide.any(axis=(1, 2))
    wide = wide.view(np.uint8)
    found: list[RefLocalised] = []
    for i, (cand, pred) in enumerate(zip(result.candidates, preds, strict=True)):
        if not pred.is_defect:
            TAKEN["ok_crop"] += 1
            continue
        marked = wide[i] if any_marked[i] else None
        mask, x0, y0 = ref_localise(cand, origins[i], marked, result)
        found.append(
            RefLocalised(
                cls=pred.cls,
                band=pred.band,
                confidence=pred.confidence,
                probabilities=pred.probabilities,
                mask=mask,
                x0=x0,
                y0=y0,
                crop=crops[i],
            )
        )
    return crops, ref_merge_overlapping(found)


class ReferencePipeline(Pipeline):
    """The worker with the reference stage 2 (everything else is the worker's own)."""

    def stage2(self, image, result):
        return ref_stage2(self, self.model, image, result)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model():
    m = VisionModel.load(model_paths()[0], intra_op_threads=1)
    m.warm_up(batch=8)
    return m


def make_config(width: int, height: int, **changes) -> WorkerConfig:
    base = {
        "site": "GF1",
        "line": "CATH-1",
        "station": "COAT-01",
        "camera": "cam1",
        "frame_width_px": width,
        "frame_height_px": height,
        "pixel_pitch_um": PITCH_UM,
        "lane_width_mm": width * PITCH_UM / 1000,
        "encoder_counts_per_m": COUNTS_PER_M,
        "noise_band_high": 30.0,
        "latency_budget_ms": 1e9,
        "rules": parse(RULES),
    }
    base.update(changes)
    return WorkerConfig(**base)


class Collect:
    def __init__(self):
        self.items = []

    def put(self, item) -> None:
        self.items.append(item)

    def close(self, timeout_s: float = 0) -> bool:
        return True


def pipelines(model, cfg: WorkerConfig, flat: FlatField, **kw) -> tuple[Pipeline, Pipeline]:
    """The worker's pipeline and the reference, alike in everything else."""

    def make(cls):
        return cls(
            cfg,
            model=model,
            identity=ModelIdentity(model.name, model.version, model.sha256, model.threshold_set),
            stop=lambda request: None,
            reject=lambda raw, reason, field: None,
            flat=flat,
            emitter=Collect(),
            clock=lambda: 1000.0,
            wall=lambda: T0,
            **kw,
        )

    return make(Pipeline), make(ReferencePipeline)


def flat_for(width: int, params: RenderParams, *, dark: bool = False) -> FlatField:
    bright = commissioning_flat_field(width, params)
    if not dark:
        return FlatField.from_frames(bright)
    # A camera with a dark offset: a capped-lens image of 3 to 9 grey levels per column.
    rng = np.random.default_rng(17)
    level = rng.uniform(3.0, 9.0, width)
    capped = np.clip(np.rint(level[None, :] + rng.normal(0, 0.8, (32, width))), 0, 255)
    return FlatField.from_frames(bright, dark=capped.astype(np.uint8))


# --------------------------------------------------------------------------- comparison


def assert_same_stage2(new, ref) -> int:
    crops, found = new
    ref_crops_, ref_found = ref
    assert crops.dtype == np.uint8 and crops.shape == ref_crops_.shape
    assert np.array_equal(crops, ref_crops_)
    assert len(found) == len(ref_found)
    for d, r in zip(found, ref_found, strict=True):
        assert (d.cls, d.band) == (r.cls, r.band)
        assert d.confidence == pytest.approx(r.confidence, abs=1e-6)
        assert d.probabilities.keys() == r.probabilities.keys()
        for k, v in r.probabilities.items():
            assert d.probabilities[k] == pytest.approx(v, abs=1e-6)
        assert (d.x0, d.y0) == (r.x0, r.y0)
        assert d.mask.shape == r.mask.shape
        assert np.array_equal(d.mask != 0, r.mask != 0)
        assert d.bbox == r.bbox
        assert d.area_px == r.area_px
        assert d.centroid == pytest.approx(r.centroid, abs=1e-9)
        assert d.length_px == pytest.approx(r.length_px, abs=1e-9)
        assert d.crop.dtype == np.uint8 and np.array_equal(d.crop, r.crop)
    return len(found)


#: Payload floats and the place they are rounded to.
ROUNDED = {
    "confidence": 1e-6,
    "equivalent_diameter_um": 1e-3,
    "length_um": 1e-3,
    "md_m": 1e-6,
    "cd_mm": 1e-4,
    "area_um2": 1e-3,
}


def assert_same_payload(new: dict, ref: dict) -> None:
    new, ref = dict(new), dict(ref)
    for p in (new, ref):
        p.pop("duration_ms", None)
    new_defects, ref_defects = new.pop("defects"), ref.pop("defects")
    assert new == ref
    assert len(new_defects) == len(ref_defects)
    for d, r in zip(new_defects, ref_defects, strict=True):
        assert d.keys() == r.keys()
        for key, value in r.items():
            if key in ROUNDED:
                assert d[key] == pytest.approx(value, abs=ROUNDED[key] * 1.01), key
            elif key == "probabilities":
                assert d[key].keys() == value.keys()
                for k, v in value.items():
                    assert d[key][k] == pytest.approx(v, abs=1e-6 * 1.01)
            else:
                assert d[key] == value, key


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("substrate", "shifted", "seed"),
    [
        ("coating", False, 4742),
        ("separator", False, 4743),
        ("coating", True, 4744),
        ("separator", True, 4745),
    ],
)
def test_stage2_of_frames_dense_with_defects_matches_the_original(model, substrate, shifted, seed):
    # Given: a 4096 x 1024 frame with fourteen defects of all classes, as the bench uses,
    # under the camera's commissioning flat field (with a dark offset on the shifted ones).
    params = RenderParams().shifted() if shifted else RenderParams()
    flat = flat_for(4096, params, dark=shifted)
    kinds = [DEFECTS[(seed + k) % 7] for k in range(14)]
    image, _ = frame(4096, 1024, seed=seed, params=params, defects=kinds, substrate=substrate)
    new, ref = pipelines(model, make_config(4096, 1024), flat)
    result = screen(image, flat=flat)
    assert len(result.candidates) >= 10
    before = Counter(TAKEN)
    # When / then
    n = assert_same_stage2(new.stage2(image, result), ref.stage2(image, result))
    assert n >= 8
    needed = {"flat", "source:fine", "small", "large", "refined"}
    # On the base rendering stage 1 also proposes marks the model calls ok; on the shifted
    # frames every candidate is one of the fourteen defects (the dark offset is there).
    needed |= {"offset"} if shifted else {"ok_crop"}
    assert needed <= taken_since(before)


def test_stage2_with_batches_that_split_a_frame_and_no_flat_field(model):
    # Given: an uncommissioned camera (identity flat field), batches of 5, and defects up to
    # the frame's borders, so crops are clamped and the last batch is partial.
    kinds = [
        ("particle", 20, 300),
        ("void", 4000, 200),
        ("pinhole", 2000, 8),
        ("crack", 1000, 1010),
        ("scratch", 3000, 500),
        ("wrinkle", 1500, 500),
        ("particle", 2600, 700),
        ("edge", 100, 600),
        ("void", 700, 250),
        ("crack", 3400, 800),
        ("pinhole", 2300, 400),
        ("scratch", 1200, 300),
    ]
    image, _ = frame(4096, 1024, seed=4750, defects=kinds, substrate="coating")
    flat = FlatField.identity(4096)
    new, ref = pipelines(model, make_config(4096, 1024, batch_size=5), flat)
    result = screen(image, flat=flat)
    assert len(result.candidates) % 5 != 0 and len(result.candidates) > 10
    before = Counter(TAKEN)
    n = assert_same_stage2(new.stage2(image, result), ref.stage2(image, result))
    assert n >= 8
    assert {"clamped", "source:coarse", "refined_changed"} <= taken_since(before)
    assert "flat" not in taken_since(before)
    assert TAKEN["batch"] - before["batch"] == math.ceil(len(result.candidates) / 5)


def test_stage2_with_more_candidates_than_a_batch(model):
    # Given: a noisy separator frame with forty defects: more than one batch of 32.
    params = RenderParams().shifted()
    flat = flat_for(4096, params)
    kinds = [DEFECTS[k % 7] for k in range(40)]
    image, _ = frame(4096, 1024, seed=4760, params=params, defects=kinds, substrate="separator")
    new, ref = pipelines(model, make_config(4096, 1024), flat)
    result = screen(image, flat=flat)
    assert len(result.candidates) > 32
    before = Counter(TAKEN)
    n = assert_same_stage2(new.stage2(image, result), ref.stage2(image, result))
    assert n > 20
    assert TAKEN["batch"] - before["batch"] == 2
    assert "box_beyond_crop" in taken_since(before)


def test_a_scratch_stage1_split_in_two_is_merged_as_before(model):
    # Given: a long scratch that stage 1 reported as two candidates (its upper and lower
    # half), as it does when the scratch fades in the middle.
    image, _ = frame(2048, 512, seed=4772, defects=[("scratch", 1000, 256)])
    flat = flat_for(2048, RenderParams())
    result = screen(image, flat=flat)
    (whole,) = [c for c in result.candidates if c.height > 100]
    x0, y0, x1, y1 = whole.box
    mid = (y0 + y1) // 2
    halves = []
    for a, b in ((y0, mid), (mid, y1)):
        ys, xs = np.nonzero(result.fine_mask[a:b, x0:x1])
        halves.append(
            Candidate(
                box=(
                    x0 + int(xs.min()),
                    a + int(ys.min()),
                    x0 + int(xs.max()) + 1,
                    a + int(ys.max()) + 1,
                ),
                area_px=int(ys.size),
                centroid=(x0 + float(xs.mean()), a + float(ys.mean())),
                peak=whole.peak,
                source=whole.source,
            )
        )
    others = [c for c in result.candidates if c is not whole]
    split = ScreenResult(**{**result.__dict__, "candidates": [*halves, *others]})
    new, ref = pipelines(model, make_config(2048, 512), flat)
    before = Counter(TAKEN)
    # When
    new_out, ref_out = new.stage2(image, split), ref.stage2(image, split)
    # Then: one scratch again, from both halves, and the same as before.
    assert "merge" in taken_since(before)
    assert_same_stage2(new_out, ref_out)
    scratches = [d for d in new_out[1] if d.cls == "scratch" and d.bbox[1] <= mid <= d.bbox[3]]
    assert len(scratches) == 1
    assert scratches[0].bbox[1] == halves[0].box[1] and scratches[0].bbox[3] == halves[1].box[3]


def test_a_streak_through_whole_frames_is_localised_as_before(model):
    # Given: consecutive frames of one web, the last with a roller scratch through all rows
    # (a streak candidate, found against the running column profile) and a particle.
    web, _ = frame(4096, 2048, seed=4781, defects=[("particle", 1200, 1800)])
    frames = [web[i : i + 512] for i in range(0, 2048, 512)]
    scratched = frames[3].copy()
    scratched[:, 2500:2503] = np.clip(scratched[:, 2500:2503].astype(int) - 60, 0, 255)
    flat = flat_for(4096, RenderParams())
    reference = StreakReference()
    for image in frames[:3]:
        screen(image, flat=flat, reference=reference)
    result = screen(scratched, flat=flat, reference=reference)
    assert [c.source for c in result.candidates].count("streak") == 1
    new, ref = pipelines(model, make_config(4096, 512), flat)
    before = Counter(TAKEN)
    crops, found = new.stage2(scratched, result)
    assert_same_stage2((crops, found), ref.stage2(scratched, result))
    assert "source:streak" in taken_since(before)
    (streak,) = [d for d in found if d.bbox == (2500, 0, 2503, 512)]
    assert streak.cls == "scratch" and streak.area_px == 3 * 512


def test_a_clean_frame_gives_no_crops_and_no_defects(model):
    image, _ = frame(2048, 512, seed=4793, defects=[], substrate="separator")
    flat = flat_for(2048, RenderParams())
    new, ref = pipelines(model, make_config(2048, 512), flat)
    result = screen(image, flat=flat)
    assert result.candidates == []
    crops, found = new.stage2(image, result)
    assert crops.shape == (0, CROP_PX, CROP_PX) and crops.dtype == np.uint8
    assert found == []
    assert_same_stage2((crops, found), ref.stage2(image, result))


@pytest.mark.parametrize("substrate", ["coating", "separator"])
def test_the_envelopes_of_a_run_match_the_original(model, substrate):
    # Given: both pipelines (the worker's, with a shadow model, and the reference) fed the
    # same run of frames of one coil: clean frames and frames with defects of all classes.
    params = RenderParams()
    flat = flat_for(4096, params)
    cfg = make_config(4096, 1024, frame_retention="all", substrate=substrate)
    new, ref = pipelines(model, cfg, flat, shadow=model)
    counts = round(1024 * PITCH_UM * 1e-6 * COUNTS_PER_M)
    decisions = Counter()
    before = Counter(TAKEN)
    for fid in range(5):
        kinds = [] if fid == 0 else [DEFECTS[(fid + k) % 7] for k in range(3 * fid)]
        seed = 4800 + fid + (100 if substrate == "separator" else 0)
        image, _ = frame(4096, 1024, seed=seed, defects=kinds, substrate=substrate)
        hdr = FrameHeader("C-24-0815", fid, fid * counts, (fid + 1) * counts, T0, "cam1")
        for pipe in (new, ref):
            pipe.handle(Frame(f"{fid}.png", 1000.0, header=hdr, image=image))
    # Then: the same payloads, frame by frame, and the same evidence crops.
    assert len(new.emitter.items) == len(ref.emitter.items) == 5
    for got, want in zip(new.emitter.items, ref.emitter.items, strict=True):
        assert_same_payload(got.envelope["payload"], want.envelope["payload"])
        assert got.envelope["message_id"] == want.envelope["message_id"]
        assert len(got.crops) == len(want.crops)
        for a, b in zip(got.crops, want.crops, strict=True):
            assert np.array_equal(a, b)
        decisions.update(d["decision"] for d in got.envelope["payload"]["defects"])
    assert new.stats.crops == ref.stats.crops > 20
    assert set(decisions) == {"ignore", "review", "quarantine", "stop"}
    assert {"refined_changed", "box_beyond_crop", "clamped", "ok_crop"} <= taken_since(before)
    assert new.emitter.items[-1].envelope["payload"]["shadow"]["verdict"] == "defect"


def test_the_fixed_point_flat_field_matches_for_every_grey_level_and_gain(model):
    # Given: a camera whose columns have every fixed-point gain 1/128 .. 256/128 (16 times
    # over the 4096 columns) and a dark offset of 0 to 9 grey levels, and a frame whose two
    # bands of 128 rows hold every grey level 0..255 in every column.
    width, height = 4096, 256
    gain = (1 + np.arange(width) % 256) / 128.0
    offset = (np.arange(width) * 7) % 10
    flat = FlatField(gain=gain, offset=offset)
    image = np.repeat(np.arange(256, dtype=np.uint8)[:, None], width, axis=1)
    centres = [(64.0 + 128 * i, 64.0 + 128 * j) for i in range(32) for j in range(2)]
    result = ScreenResult(
        candidates=[
            Candidate((int(x) - 4, int(y) - 4, int(x) + 4, int(y) + 4), 64, (x, y), 20.0, "fine")
            for x, y in centres
        ],
        fine_mask=np.zeros((height, width), np.uint8),
        coarse_mask=np.zeros((height // 4, width // 4), bool),
        mean_grey=128.0,
        noise_sigma=1.0,
        fine_threshold=12.0,
        coarse_threshold=5.0,
    )
    new, ref = pipelines(model, make_config(width, height), flat)
    # When / then: the same crops (and all that follows) as the reference's per-batch
    # 16-bit arithmetic, 64 crops in two batches.
    crops, found = new.stage2(image, result)
    assert crops.shape == (64, CROP_PX, CROP_PX)
    assert_same_stage2((crops, found), ref.stage2(image, result))
    # ... and within half a grey level of the float correction, saturated at 255.
    exact = (image.astype(np.float64) - offset) * gain
    for k, (x, y) in enumerate(centres):
        x0, y0 = int(x) - 64, int(y) - 64
        want = exact[y0 : y0 + CROP_PX, x0 : x0 + CROP_PX]
        got = crops[k].astype(np.float64)
        assert (np.abs(got - np.clip(want, 0, 255)) <= 0.5 + 1e-9).all()


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (7, 3), (45, 45), (113, 77), (24, 240), (1024, 3), (300, 300), (512, 200)],
)
def test_a_defect_measures_as_before_whatever_its_size(shape):
    # Given: masks from a single pixel to ones beyond the matrix-product size (OpenCV then),
    # sparse and dense, one with an empty row and column at its border.
    rng = np.random.default_rng(sum(shape))
    for density in (0.05, 0.5, 1.0):
        mask = (rng.random(shape) < density).astype(np.uint8)
        mask[0, :] = 0
        mask[:, -1] = 0
        if not mask.any():
            mask[shape[0] - 1, 0] = 1
        got = Localised("void", "act", 0.9, {}, mask, 1500, 700, np.zeros((1, 1), np.uint8))
        want = RefLocalised("void", "act", 0.9, {}, mask, 1500, 700, np.zeros((1, 1), np.uint8))
        _measure(got)
        ref_measure(want)
        assert (got.bbox, got.area_px) == (want.bbox, want.area_px)
        assert got.centroid == pytest.approx(want.centroid, abs=1e-9)
        assert got.length_px == pytest.approx(want.length_px, abs=1e-9)


def test_an_empty_mask_measures_as_before():
    for shape in ((5, 9), (400, 300)):
        mask = np.zeros(shape, np.uint8)
        got = Localised("crack", "log", 0.5, {}, mask, 10, 20, np.zeros((1, 1), np.uint8))
        want = RefLocalised("crack", "log", 0.5, {}, mask, 10, 20, np.zeros((1, 1), np.uint8))
        _measure(got)
        ref_measure(want)
        assert (
            (got.bbox, got.area_px, got.centroid, got.length_px)
            == (
                want.bbox,
                want.area_px,
                want.centroid,
                want.length_px,
            )
            == ((10, 20, 10, 20), 0, (10.0, 20.0), 0.0)
        )


@pytest.mark.parametrize("cells", [16, 32, 12, 10])
def test_the_map_cells_under_a_defect_are_the_map_scaled_to_the_crop(cells):
    # Given: a defect map of 16 x 16 cells (the model's), 32 x 32, and sizes that do not
    # tile the 128-px crop (scaled whole by OpenCV, as before).
    rng = np.random.default_rng(cells)
    grid = (rng.random((cells, cells)) < 0.3).astype(np.uint8)
    scaled = cv2.resize(grid, (CROP_PX, CROP_PX), interpolation=cv2.INTER_NEAREST)
    size = CROP_PX // cells
    cell = size if cells * size == CROP_PX else None
    for _ in range(200):
        y0, x0 = (int(v) for v in rng.integers(0, CROP_PX, 2))
        y1, x1 = int(rng.integers(y0 + 1, CROP_PX + 1)), int(rng.integers(x0 + 1, CROP_PX + 1))
        got = _cells_under(grid, cell, y0, y1, x0, x1)
        assert np.array_equal(got, scaled[y0:y1, x0:x1])


# --------------------------------------------------------------------------- the batch path


def test_infer_into_a_given_buffer_gives_what_a_fresh_batch_gives(model):
    rng = np.random.default_rng(5)
    crops = rng.integers(40, 220, (7, 128, 128), dtype=np.uint8)
    probs, maps = model.infer(crops)
    buf = np.full((32, 1, 128, 128), -1.0, np.float32)
    got_probs, got_maps = model.infer(crops, out=buf)
    assert np.array_equal(got_probs, probs) and np.array_equal(got_maps, maps)
    assert np.array_equal(buf[:7, 0], crops.astype(np.float32))
    assert (buf[7:] == -1.0).all()  # rows beyond the batch are left alone


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (np.zeros((4, 1, 128, 128), np.float32), "rows"),
        (np.zeros((32, 1, 128, 128), np.float64), "float32"),
        (np.zeros((32, 128, 128), np.float32), "float32"),
        (np.zeros((32, 1, 64, 64), np.float32), "float32"),
        (np.zeros((32, 1, 128, 256), np.float32)[..., ::2], "contiguous"),
    ],
)
def test_infer_refuses_a_buffer_it_cannot_fill(model, out, message):
    crops = np.full((7, 128, 128), 128, np.uint8)
    with pytest.raises(ModelError) as err:
        model.infer(crops, out=out)
    assert err.value.code == "bad_input"
    assert message in err.value.message


def test_a_buffer_is_for_uint8_crops_only(model):
    x = np.full((3, 1, 128, 128), 128.0, np.float32)
    with pytest.raises(ModelError) as err:
        model.infer(x, out=np.zeros((32, 1, 128, 128), np.float32))
    assert err.value.code == "bad_input"
