"""Synthetic inspection images: determinism, masks, physical sizes, camera effects, frames."""

import cv2
import numpy as np
import pytest

from inspection.synthetic import (
    CLASSES,
    GENERATOR_VERSION,
    SUBSTRATES,
    RenderParams,
    dataset,
    dataset_slice,
    flat_field,
    frame,
    patch,
)

DEFECTS = [c for c in CLASSES if c != "ok"]


def _rng(seed):
    return np.random.default_rng(seed)


def test_classes_are_fixed_in_order():
    assert CLASSES == (
        "ok",
        "pinhole",
        "void",
        "particle",
        "scratch",
        "wrinkle",
        "edge",
        "crack",
    )
    assert SUBSTRATES == ("coating", "separator")


@pytest.mark.parametrize("substrate", SUBSTRATES)
@pytest.mark.parametrize("cls", CLASSES)
def test_same_seed_gives_identical_patch(cls, substrate):
    a = patch(cls, substrate, _rng(11))
    b = patch(cls, substrate, _rng(11))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta


@pytest.mark.parametrize("cls", CLASSES)
def test_different_seeds_differ(cls):
    a = patch(cls, "coating", _rng(1))
    b = patch(cls, "coating", _rng(2))
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("substrate", SUBSTRATES)
@pytest.mark.parametrize("cls", CLASSES)
def test_shapes_types_and_mask_presence(cls, substrate):
    for seed in range(6):
        s = patch(cls, substrate, _rng(seed))
        assert s.image.shape == (128, 128)
        assert s.image.dtype == np.uint8
        assert s.mask.shape == (128, 128)
        assert s.mask.dtype == bool
        assert s.cls == cls
        assert s.substrate == substrate
        assert s.meta["generator_version"] == GENERATOR_VERSION
        if cls == "ok":
            assert not s.mask.any()
            assert "contrast" not in s.meta
        else:
            assert s.mask.any()
            x, y = s.meta["position"]
            assert 0 <= x < 128
            assert 0 <= y < 128
            lo, hi = RenderParams().contrast_range
            assert lo <= s.meta["contrast"] <= hi
            assert 0.0 <= s.meta["orientation_deg"] < 180.0


def test_patch_size_is_honoured():
    s = patch("particle", "separator", _rng(5), size=64)
    assert s.image.shape == (64, 64)
    assert s.mask.shape == (64, 64)


def test_unknown_class_or_substrate_is_refused():
    with pytest.raises(ValueError, match="unknown class"):
        patch("bubble", "coating", _rng(0))
    with pytest.raises(ValueError, match="unknown substrate"):
        patch("ok", "cathode", _rng(0))


@pytest.mark.parametrize("substrate", SUBSTRATES)
@pytest.mark.parametrize("cls", DEFECTS)
def test_mask_matches_where_the_defect_changed_the_image(cls, substrate):
    """Same seed with and without the defect: background and noise are identical."""
    for seed in range(4):
        with_defect = patch(cls, substrate, _rng(seed))
        without = patch(cls, substrate, _rng(seed), render_defect=False)
        assert np.array_equal(with_defect.mask, without.mask)
        diff = np.abs(with_defect.image.astype(int) - without.image.astype(int))
        mask = with_defect.mask
        # Outline blur and the particle halo reach a little beyond the footprint.
        near = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        changed = diff >= 4
        assert changed.any()
        assert changed[near].sum() / changed.sum() >= 0.95
        assert diff[mask].mean() > 3.0 * max(diff[~near].mean(), 0.2)


@pytest.mark.parametrize(("pitch_um", "expected_px"), [(20.0, 10.0), (10.0, 20.0)])
def test_particle_size_follows_pixel_pitch(pitch_um, expected_px):
    params = RenderParams(pixel_pitch_um=pitch_um)
    diameters = []
    for seed in range(8):
        s = patch("particle", "coating", _rng(seed), params, size_um=200.0)
        assert s.meta["size_um"] == 200.0
        assert s.meta["size_px"] == pytest.approx(expected_px)
        diameters.append(2.0 * np.sqrt(s.mask.sum() / np.pi))
    assert np.mean(diameters) == pytest.approx(expected_px, rel=0.2)


def test_scratch_runs_along_the_machine_direction():
    for seed in range(6):
        s = patch("scratch", "coating", _rng(seed), size_um=2000.0)
        ys, xs = np.nonzero(s.mask)
        assert np.ptp(ys) > 3 * np.ptp(xs)


def test_ok_patches_show_clean_edges_in_the_stated_fraction():
    params = RenderParams(ok_edge_fraction=0.3)
    edges = [patch("ok", "coating", _rng(seed), params).meta["has_edge"] for seed in range(400)]
    assert 0.24 <= np.mean(edges) <= 0.36
    none = RenderParams(ok_edge_fraction=0.0)
    assert not any(patch("ok", "coating", _rng(s), none).meta["has_edge"] for s in range(50))


def test_edge_patch_has_an_edge_and_a_clean_edge_looks_like_one():
    s = patch("edge", "coating", _rng(3))
    assert s.meta["has_edge"] is True
    params = RenderParams(ok_edge_fraction=1.0)
    ok = patch("ok", "coating", _rng(3), params)
    # Coating (dark) on one side, bare foil (bright) on the other.
    cols = ok.image.astype(float).mean(axis=0)
    assert cols.max() - cols.min() > 80


def test_shifted_params_are_versioned_noisier_and_lower_contrast():
    base = RenderParams()
    shifted = base.shifted()
    assert shifted.version == GENERATOR_VERSION
    assert (base.name, shifted.name) == ("base", "shifted")
    assert shifted.noise_sigma > base.noise_sigma
    assert shifted.gradient_strength > base.gradient_strength
    assert shifted.contrast_range[1] < base.contrast_range[1]
    assert shifted.defocus_sigma_px > 0
    assert base.as_dict()["pixel_pitch_um"] == 20.0
    with pytest.raises(AttributeError):
        base.noise_sigma = 9.0  # frozen

    # Temporal noise of a flat target: row-to-row differences cancel gain and gradient.
    def noise(params):
        img = flat_field(128.0, _rng(0), params).astype(float)
        return np.diff(img, axis=0).std() / np.sqrt(2.0)

    assert noise(shifted) > 1.8 * noise(base)

    # Illumination gradient across the whole line.
    def falloff(params):
        img = flat_field(200.0, _rng(0), params, size=128, col0=0).astype(float)
        edge = img[:, :16].mean()
        centre = flat_field(200.0, _rng(0), params, size=128, col0=1984).astype(float).mean()
        return centre - edge

    assert falloff(shifted) > falloff(base) > 0

    # Same geometry, lower contrast inside the defect.
    def contrast(params):
        with_d = patch("particle", "coating", _rng(4), params)
        without = patch("particle", "coating", _rng(4), params, render_defect=False)
        d = np.abs(with_d.image.astype(float) - without.image.astype(float))
        return with_d.meta["contrast"], d[with_d.mask].mean()

    c_base, d_base = contrast(base)
    c_shift, d_shift = contrast(shifted)
    assert c_shift < c_base
    assert d_shift < d_base


def test_dataset_is_deterministic_and_labelled():
    a = dataset(2, seed=7)
    b = dataset(2, seed=7)
    c = dataset(2, seed=8)
    n = 2 * len(CLASSES) * len(SUBSTRATES)
    assert a.images.shape == (n, 128, 128)
    assert a.images.dtype == np.uint8
    assert a.masks.shape == (n, 128, 128)
    assert a.masks.dtype == bool
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert np.bincount(a.labels, minlength=len(CLASSES)).tolist() == [4] * len(CLASSES)
    assert np.bincount(a.substrates).tolist() == [16, 16]
    ok = a.labels == CLASSES.index("ok")
    assert not a.masks[ok].any()
    assert all(m.any() for m in a.masks[~ok])


def test_dataset_one_substrate():
    d = dataset(1, seed=1, substrates=("separator",))
    assert d.images.shape == (len(CLASSES), 128, 128)
    assert set(d.substrates.tolist()) == {1}


@pytest.mark.parametrize("substrate", SUBSTRATES)
def test_frame_4096_wide_with_defect_boxes_inside(substrate):
    specs = [("pinhole", 1000, 300), ("particle", 2500, 600), "crack", "edge", "scratch"]
    image, defects = frame(width=4096, height=1024, seed=3, defects=specs, substrate=substrate)
    assert image.shape == (1024, 4096)
    assert image.dtype == np.uint8
    assert [d.cls for d in defects] == ["pinhole", "particle", "crack", "edge", "scratch"]
    for d in defects:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 4096
        assert 0 <= y0 < y1 <= 1024
        assert d.mask.shape == (y1 - y0, x1 - x0)
        assert d.mask.any()
    x0, y0, x1, y1 = defects[0].box
    assert x0 <= 1000 < x1 + 3
    assert y0 <= 300 < y1 + 3
    again, again_defects = frame(
        width=4096, height=1024, seed=3, defects=specs, substrate=substrate
    )
    assert np.array_equal(image, again)
    assert [d.box for d in again_defects] == [d.box for d in defects]


def test_frame_random_defects_and_value_range():
    image, defects = frame(width=2048, height=512, seed=9)
    assert image.shape == (512, 2048)
    assert len(defects) == 4
    assert all(d.cls in CLASSES and d.cls != "ok" for d in defects)
    assert 0 <= int(image.min()) < int(image.max()) <= 255


def test_slices_of_a_dataset_render_the_same_patches_as_the_whole():
    # The training script renders a set's parts in several processes: any split of the
    # range must give exactly the patches of the whole set, in order.
    params = RenderParams().shifted()
    whole = dataset(3, seed=41, params=params)
    n = len(whole.labels)
    parts = [dataset_slice(3, 41, params, a, b) for a, b in ((0, 5), (5, 17), (17, n))]
    images, masks, labels, subs = (np.concatenate(p) for p in zip(*parts, strict=True))
    assert np.array_equal(images, whole.images)
    assert np.array_equal(masks, whole.masks)
    assert np.array_equal(labels, whole.labels)
    assert np.array_equal(subs, whole.substrates)
    assert masks[labels != 0].any(axis=(1, 2)).all()  # the defects were drawn
