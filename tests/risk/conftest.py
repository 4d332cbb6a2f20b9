"""Fixtures of the risk app's tests: the committed thermal-risk model registered, approved
and active; the small digital thread of the genealogy tests (16 cells from known coil
metres, 5 modules, 3 packs, 3 vehicles) with formation features for every cell."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from formation.models import CellFeatures
from tests.factories import UserFactory

LOT = "CC-260303-001"


def grant_approval(user) -> None:
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="risk", codename="approve_riskmodel")
    )


@pytest.fixture
def quality(db):
    user = UserFactory(username="qe-risk", role="quality_engineer")
    grant_approval(user)
    return user


@pytest.fixture
def operator(db):
    return UserFactory(username="op-risk", role="operator")


@pytest.fixture
def risk_model(quality):
    from risk import services
    from risk.scoring import default_model_paths

    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    services.model_approve(model=model, actor=quality, reason="Commissioning acceptance")
    return services.model_activate(model=model, actor=quality, reason="Line start")


@pytest.fixture
def thread(plant):
    from tests.genealogy.conftest import build_thread

    return build_thread(plant)


def features_write(cells, *, outlier_index: int | None = None, seed: int = 20260303) -> None:
    """Formation features of ``cells`` in one lot, spread like a real lot: capacities move
    together (ICE = discharge / charge capacity), resistances move together, the
    end-of-aging OCV falls with the K-value over ten days. ``cells[outlier_index]``
    self-discharges ten times its lot's rate (the signature of an internal micro-short)."""
    rng = np.random.default_rng(seed)
    now = timezone.now()
    rows = []
    for i, cell in enumerate(cells):
        e = rng.standard_normal(8)
        capacity, resistance = 0.003 * e[0], 0.008 * e[1]
        k = 0.052 * (1.0 + 0.04 * e[2])
        if i == outlier_index:
            k = 0.52
        q_charge = 114.2 * (1.0 + capacity)
        ice = 0.9265 * (1.0 + 0.0004 * e[3])
        values = {
            "q_charge_ah": q_charge,
            "q_discharge_ah": q_charge * ice,
            "ice": ice,
            "v_mean_discharge_v": 3.652 * (1.0 - 0.05 * resistance),
            "cv_time_s": 1820.0 * (1.0 + 0.5 * resistance + 0.002 * e[4]),
            "dcir_1s_mohm": 0.452 * (1.0 + resistance + 0.002 * e[5]),
            "dcir_10s_mohm": 0.611 * (1.0 + resistance + 0.002 * e[6]),
            "r_low_soc_10s_mohm": 0.934 * (1.0 + resistance),
            "temperature_rise_k": 4.1 * (1.0 + 0.5 * resistance),
            "k_value_mv_per_day": k,
            "k_value_se_mv_per_day": 0.0041 * (1.0 + 0.03 * e[7]),
            "ocv_end_mv": 3581.5 - 10.0 * k,
        }
        rows.append(
            CellFeatures(
                unit=cell,
                lot=LOT,
                channel_key=f"fc-01:{i % 4}",
                rack=f"AG-{i % 2}",
                formed_at=now - timedelta(days=3, minutes=10 * i),
                aging_readings=5,
                feature_version="1.0.0",
                computed_at=now - timedelta(days=1),
                **values,
            )
        )
    CellFeatures.objects.bulk_create(rows)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a block as if its transaction committed: the events it publishes are delivered."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run
