"""Fixtures of the inspection tests: the committed vision model registered, approved and
active, a camera over the cathode coater, and the small digital thread of the genealogy
tests (cells made from known coil metres)."""

from __future__ import annotations

import pytest

from inspection.choices import Substrate
from inspection.models import InspectionStation
from tests.factories import UserFactory


@pytest.fixture
def quality(db):
    return UserFactory(username="qe-vision", role="quality_engineer")


@pytest.fixture
def operator(db):
    return UserFactory(username="op-vision", role="operator")


@pytest.fixture
def vision_model(quality):
    from inspection import services
    from inspection.vision.model import default_model_paths

    manifest, onnx, golden = default_model_paths()
    model = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )
    services.model_approve(model=model, actor=quality, reason="Commissioning acceptance")
    return services.model_activate(model=model, actor=quality, reason="Line start")


@pytest.fixture
def camera(plant, vision_model):
    return InspectionStation.objects.create(
        station=plant.stations["coat-c"],
        camera="cam-c1",
        substrate=Substrate.COATING,
        pixel_pitch_um=20.0,
        frame_width_px=4096,
        frame_height_px=1024,
        lane_width_mm=81.92,
        model=vision_model,
    )


@pytest.fixture
def thread(plant):
    from tests.genealogy.conftest import build_thread

    return build_thread(plant)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a block as if its transaction committed: the events it publishes are delivered
    (and the Celery tasks they enqueue run eagerly), as after a real ingest commit."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run
