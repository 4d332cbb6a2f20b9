"""Stage 1 of the vision worker: flat-field correction and the screen of full frames.

Frames come from :func:`inspection.synthetic.frame`: one lane of coating (or separator film)
between two web edges, defects with known boxes and masks.
"""

import numpy as np
import pytest

from inspection.management.commands.vision_frames import commissioning_flat_field
from inspection.synthetic import CLASSES, SUBSTRATES, RenderParams, frame
from inspection.vision.screen import (
    FlatField,
    FlatFieldError,
    ScreenParams,
    StreakReference,
    screen,
)

DEFECTS = [c for c in CLASSES if c != "ok"]
#: Upper bound of candidates on a clean 4096 x 1024 frame with two web edges (measured over
#: 20 frames each: coating 0-9, mean 3.3; separator 0-5, mean 2.6). Each costs one crop.
CLEAN_CANDIDATES_MAX = 12


def covers(cand, defect) -> bool:
    """A candidate box covers a drawn defect when it holds at least one of its mask pixels."""
    x0, y0, x1, y1 = cand.box
    bx0, by0, bx1, by1 = defect.box
    ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
    if ix0 >= ix1 or iy0 >= iy1:
        return False
    return bool(defect.mask[iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0].any())


# --------------------------------------------------------------------------- flat field


def test_flat_field_removes_the_camera_column_pattern():
    params = RenderParams()
    flat = FlatField.from_frames(commissioning_flat_field(4096, params, level=180.0))
    # Another uniform target, another level, fresh sensor noise: the pattern is the camera's.
    target = commissioning_flat_field(4096, params, level=120.0, rows=128)
    raw = target.mean(axis=0)
    corrected = flat.apply(target).astype(np.float64).mean(axis=0)
    # Illumination fall-off (12 %) and fixed-pattern gain (1 %) before ...
    assert raw.std() / raw.mean() > 0.025
    assert raw.max() - raw.min() > 18.0
    # ... and a flat response after: within 0.3 % and 3 grey levels end to end.
    assert corrected.std() / corrected.mean() < 0.003
    assert corrected.max() - corrected.min() < 3.0
    assert abs(corrected.mean() - 120.0) < 2.0


def test_flat_field_with_a_dark_frame_removes_the_offset():
    cols = np.arange(512)
    gain_pattern = 1.0 + 0.1 * np.sin(cols / 40.0)
    offset = 6.0 + 4.0 * (cols % 3)
    bright = np.clip(np.rint(150.0 * gain_pattern + offset), 0, 255).astype(np.uint8)[None, :]
    dark = np.rint(np.broadcast_to(offset, (4, 512))).astype(np.uint8)
    flat = FlatField.from_frames(np.repeat(bright, 8, 0), dark=dark, target_level=150.0)
    scene = np.clip(np.rint(90.0 * gain_pattern + offset), 0, 255).astype(np.uint8)[None, :]
    out = flat.apply(np.repeat(scene, 4, 0))
    assert np.abs(out.astype(int) - 90).max() <= 1


def test_flat_field_applies_to_a_crop_by_its_first_column():
    params = RenderParams()
    flat = FlatField.from_frames(commissioning_flat_field(4096, params))
    image, _ = frame(4096, 256, seed=3, defects=[])
    full = flat.apply(image)
    assert np.array_equal(flat.apply(image[100:228, 1000:1128], 1000), full[100:228, 1000:1128])
    with pytest.raises(FlatFieldError):
        flat.apply(image[:, :200], 4000)


def test_flat_field_save_and_load(tmp_path):
    flat = FlatField.from_frames(commissioning_flat_field(1024, RenderParams(line_pixels=1024)))
    flat.save(tmp_path / "cam1.npz")
    again = FlatField.load(tmp_path / "cam1.npz")
    assert np.array_equal(again.gain, flat.gain)
    assert np.array_equal(again.offset, flat.offset)
    (tmp_path / "bad.npz").write_bytes(b"not a flat field")
    with pytest.raises(FlatFieldError):
        FlatField.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "make",
    [
        lambda: FlatField.from_frames(np.zeros(16, np.uint8)),
        lambda: FlatField.from_frames(np.full((4, 16), 3, np.uint8)),  # dead columns
        lambda: FlatField.from_frames(np.full((4, 16), 90, np.uint8), dark=np.zeros((4, 8))),
        lambda: FlatField(gain=np.array([1.0, -1.0]), offset=np.zeros(2)),
        lambda: FlatField(gain=np.ones(3), offset=np.zeros(2)),
        lambda: FlatField(gain=np.array([1.0, np.nan]), offset=np.zeros(2)),
    ],
)
def test_unusable_flat_fields_are_refused(make):
    with pytest.raises(FlatFieldError):
        make()


# --------------------------------------------------------------------------- the screen


@pytest.fixture(scope="module")
def defect_frames():
    """Two defects of each class per frame, three frames per class and substrate."""
    out = []
    for substrate in SUBSTRATES:
        for cls in DEFECTS:
            for seed in range(3):
                image, drawn = frame(
                    4096,
                    1024,
                    seed=seed * 10 + CLASSES.index(cls),
                    defects=[cls, cls],
                    substrate=substrate,
                )
                out.append((substrate, cls, image, drawn))
    return out


def test_candidates_cover_at_least_95_percent_of_drawn_defects(defect_frames):
    found, drawn_total = {}, {}
    for substrate, cls, image, drawn in defect_frames:
        result = screen(image)
        for d in drawn:
            key = (substrate, cls)
            drawn_total[key] = drawn_total.get(key, 0) + 1
            found[key] = found.get(key, 0) + any(covers(c, d) for c in result.candidates)
    recall = sum(found.values()) / sum(drawn_total.values())
    assert sum(drawn_total.values()) == 84
    assert recall >= 0.95, {k: f"{found[k]}/{drawn_total[k]}" for k in drawn_total}
    for key, n in drawn_total.items():
        assert found[key] >= n - 2, key


@pytest.mark.parametrize("substrate", SUBSTRATES)
def test_clean_frames_with_edges_give_few_candidates(substrate):
    counts = []
    for seed in range(4):
        image, drawn = frame(4096, 1024, seed=500 + seed, defects=[], substrate=substrate)
        assert drawn == []
        result = screen(image)
        # Both lane edges are seen, ...
        assert len(result.edges) == 2
        assert result.edges[0] < 400 and result.edges[1] > 3600
        # ... and their steps do not flood the screen: at most one candidate (texture
        # beside the edge) within 16 px of either edge, and few candidates in all.
        near_edge = [
            c
            for c in result.candidates
            if any(c.box[0] - 16 <= e <= c.box[2] + 16 for e in result.edges)
        ]
        assert len(near_edge) <= 1
        assert len(result.candidates) <= CLEAN_CANDIDATES_MAX
        counts.append(len(result.candidates))
    assert sum(counts) / len(counts) <= 6


def test_edge_defects_are_caught_beyond_the_suppressed_edge_band():
    hits = 0
    for seed in range(6):
        image, drawn = frame(4096, 1024, seed=70 + seed, defects=["edge"])
        result = screen(image)
        assert len(drawn) == 1
        hits += any(covers(c, drawn[0]) for c in result.candidates)
    assert hits == 6


def test_candidate_boxes_are_tight_on_a_particle():
    image, drawn = frame(4096, 1024, seed=31, defects=[("particle", 2000, 500)])
    (d,) = drawn
    result = screen(image)
    hits = [c for c in result.candidates if covers(c, d)]
    assert len(hits) == 1
    (c,) = hits
    assert c.source == "fine"
    # The box sits on the drawn mask within a few pixels (halo and outline blur).
    assert all(abs(a - b) <= 4 for a, b in zip(c.box, d.box, strict=True))
    assert abs(c.centroid[0] - (d.box[0] + d.box[2]) / 2) < 3
    assert abs(c.centroid[1] - (d.box[1] + d.box[3]) / 2) < 3
    assert c.peak < 0  # a particle is darker than the coating


def test_a_scratch_through_whole_frames_is_found_against_the_running_profile():
    # Consecutive frames of one web: 512-row pieces of one tall frame (same edges, same
    # slot-die streaks, fresh texture and noise).
    web, _ = frame(4096, 2048, seed=900, defects=[])
    frames = [web[i : i + 512] for i in range(0, 2048, 512)]
    reference = StreakReference()
    for image in frames[:3]:
        assert [
            c for c in screen(image, reference=reference).candidates if c.source == "streak"
        ] == []
    assert reference.frames == 3
    scratched = frames[3].copy()
    scratched[:, 2500:2502] = np.clip(scratched[:, 2500:2502].astype(int) + 45, 0, 255)
    # The frame's own column profile absorbs a line through all its rows ...
    alone = screen(scratched)
    assert not [c for c in alone.candidates if c.box[0] <= 2500 < c.box[2] and c.height > 400]
    # ... the running reference does not.
    result = screen(scratched, reference=reference)
    streaks = [c for c in result.candidates if c.source == "streak"]
    assert len(streaks) == 1
    assert streaks[0].box == (2500, 0, 2502, 512)
    assert streaks[0].peak > 30


def test_the_streak_reference_starts_again_when_the_edges_move():
    reference = StreakReference()
    first, _ = frame(4096, 512, seed=901, defects=[])
    other, _ = frame(4096, 512, seed=902, defects=[])  # another lane: edges elsewhere
    screen(first, reference=reference)
    result = screen(other, reference=reference)
    assert [c for c in result.candidates if c.source == "streak"] == []
    assert reference.frames == 1


def test_frame_statistics_for_the_drift_monitor():
    image, _ = frame(4096, 1024, seed=44, defects=[])
    base = screen(image)
    assert 75 < base.mean_grey < 95  # coating ~72 between foil margins ~200
    assert 6.0 < base.noise_sigma < 10.0
    rng = np.random.default_rng(1)
    noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    assert screen(noisy).noise_sigma > base.noise_sigma + 3.0
    darker = (image * 0.6).astype(np.uint8)
    assert screen(darker).mean_grey < base.mean_grey * 0.65


def test_many_defects_are_capped_and_counted():
    image, _ = frame(4096, 1024, seed=8, defects=["particle"] * 12)
    result = screen(image, params=ScreenParams(max_candidates=5))
    assert len(result.candidates) == 5
    assert result.truncated >= 7


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((64, 64), np.uint16), ValueError),
        (np.zeros((64, 64, 3), np.uint8), ValueError),
        (np.zeros((8, 8), np.uint8), ValueError),
    ],
)
def test_unscreenable_images_are_refused(image, error):
    with pytest.raises(error):
        screen(image)


def test_a_flat_field_of_another_width_is_refused():
    image, _ = frame(1024, 256, seed=1, defects=[])
    with pytest.raises(FlatFieldError):
        screen(image, flat=FlatField.identity(4096))
