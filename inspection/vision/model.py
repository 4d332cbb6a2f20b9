"""Runtime of the electrode-surface inspection model: a checked ONNX file and its thresholds.

A model ships as three files (see ``inspection/model_files/README.md``): the ONNX graph, a
manifest JSON (classes, input, outputs, thresholds, training provenance, metrics, the
graph's sha256) and a golden set (crops with the outputs the training framework gave).
:meth:`VisionModel.load` refuses a file whose sha256 differs from the manifest, a manifest
that lacks what the runtime needs, or a graph whose inputs and outputs differ from what the
manifest declares. :func:`golden_check` re-runs the golden set and compares.

Input is the raw 8-bit grey value of a 128 x 128 crop: normalisation, softmax and the
defect-map sigmoid live inside the graph. The decision rule that turns probabilities into a
class and a band is :meth:`Thresholds.decide` (documented there and in the manifest);
the training script calibrates and evaluates with this same code.

Only numpy and onnxruntime: the vision worker imports this without Django.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort

DEFAULT_MODEL_NAME = "electrode-surface"
DEFAULT_MODEL_VERSION = "1.1.0"
MODEL_FILES_DIR = Path(__file__).resolve().parents[1] / "model_files"

OK_CLASS = "ok"
BANDS = ("act", "review", "log")
DECISION_RULE_ID = "ok-threshold-then-argmax-bands/1"
DECISION_RULE = (
    "d = 1 - p(ok). If d < thresholds.ok_decision the crop is 'ok' with confidence p(ok) "
    "and band 'log'. Otherwise the class is the defect class k with the largest probability "
    "(ties go to the first in classes order), confidence = p(k), and the band is 'act' if "
    "p(k) >= per_class[k].high, 'review' if per_class[k].low <= p(k) < per_class[k].high, "
    "else 'log'."
)

_REQUIRED_KEYS = (
    "name",
    "version",
    "classes",
    "input",
    "outputs",
    "pixel_pitch_um",
    "thresholds",
    "threshold_set",
    "sha256",
)
_CHUNK = 1 << 20


class ModelError(Exception):
    """A model that must not run, or an input it cannot take.

    ``code`` is one of ``file_missing``, ``checksum_mismatch``, ``manifest_invalid``,
    ``golden_failed`` or ``bad_input``; the message says what exactly.
    """

    CODES = ("file_missing", "checksum_mismatch", "manifest_invalid", "golden_failed", "bad_input")

    def __init__(self, code: str, message: str):
        if code not in self.CODES:
            raise ValueError(f"unknown ModelError code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(data) -> str:
    """The JSON text hashed for ids: sorted keys, no whitespace, plain floats."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Prediction:
    """One crop after thresholds.

    ``cls`` is a member of the model's classes (``"ok"`` when the crop is not called a
    defect); ``confidence`` is the probability of ``cls``; ``band`` is ``act`` (at or above
    the class's high threshold: act automatically), ``review`` (between low and high: a person
    decides) or ``log`` (below low, and every ``ok`` call: recorded only).
    """

    cls: str
    confidence: float
    probabilities: dict[str, float]
    band: str

    @property
    def is_defect(self) -> bool:
        return self.cls != OK_CLASS


@dataclass(frozen=True)
class Thresholds:
    """The calibrated decision thresholds of one model (see :meth:`decide` for the rule).

    ``ok_decision`` applies to ``1 - p(ok)``; ``high`` and ``low`` hold one value per defect
    class, in ``defect_classes`` order. ``set_id`` names the set: the first 12 hex digits of
    the sha256 of :meth:`as_dict` as canonical JSON, so every result can say which set made it.
    """

    classes: tuple[str, ...]
    ok_decision: float
    high: tuple[float, ...]
    low: tuple[float, ...]

    @property
    def defect_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c != OK_CLASS)

    def as_dict(self) -> dict:
        return {
            "rule": DECISION_RULE_ID,
            "ok_decision": self.ok_decision,
            "per_class": {
                c: {"high": h, "low": lo}
                for c, h, lo in zip(self.defect_classes, self.high, self.low, strict=True)
            },
        }

    @property
    def set_id(self) -> str:
        return hashlib.sha256(canonical_json(self.as_dict()).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data, classes) -> Thresholds:
        """Parse and check a manifest's ``thresholds``; ModelError("manifest_invalid") if off."""
        classes = tuple(classes)
        try:
            if data["rule"] != DECISION_RULE_ID:
                raise ModelError(
                    "manifest_invalid",
                    f"decision rule {data['rule']!r} is not {DECISION_RULE_ID!r}",
                )
            ok = float(data["ok_decision"])
            per_class = data["per_class"]
            defects = [c for c in classes if c != OK_CLASS]
            if set(per_class) != set(defects):
                raise ModelError(
                    "manifest_invalid", "thresholds.per_class must name every defect class"
                )
            high = tuple(float(per_class[c]["high"]) for c in defects)
            low = tuple(float(per_class[c]["low"]) for c in defects)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError("manifest_invalid", f"thresholds unreadable: {exc!r}") from exc
        if not 0.0 < ok <= 1.0:
            raise ModelError("manifest_invalid", f"ok_decision {ok} outside (0, 1]")
        for c, h, lo in zip(defects, high, low, strict=True):
            if not (0.0 <= lo <= h <= 1.0):
                raise ModelError(
                    "manifest_invalid", f"thresholds of {c!r}: need 0 <= low <= high <= 1"
                )
        return cls(classes=classes, ok_decision=ok, high=high, low=low)

    def decide(self, probs: np.ndarray) -> list[Prediction]:
        """Apply the decision rule to probabilities ``(N, len(classes))``.

        With d = 1 - p(ok): below ``ok_decision`` the crop is ``ok`` (confidence p(ok), band
        ``log``). Otherwise it is the defect class k with the largest probability (first in
        class order on a tie), confidence p(k), band ``act`` if p(k) >= high[k], ``review`` if
        low[k] <= p(k) < high[k], else ``log``. Nothing else is consulted.
        """
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] != len(self.classes):
            raise ModelError(
                "bad_input", f"probs must be (N, {len(self.classes)}), got {probs.shape}"
            )
        if probs.dtype.kind != "f":
            raise ModelError("bad_input", "probs must be finite floating-point values")
        if probs.dtype.itemsize > 8:
            probs = probs.astype(np.float64)
        ok_idx, defects, high, low = self._plan
        classes, ok_decision = self.classes, self.ok_decision
        # A few tens of rows per call (a worker's frame): plain Python on the values as
        # float64 (exact for float16 and float32) does the rule with the fewest steps.
        rows = probs.tolist()
        if not all(map(math.isfinite, itertools.chain.from_iterable(rows))):
            raise ModelError("bad_input", "probs must be finite floating-point values")
        out = []
        for row in rows:
            p = dict(zip(classes, row, strict=True))
            if 1.0 - row[ok_idx] < ok_decision:
                out.append(Prediction(OK_CLASS, row[ok_idx], p, "log"))
                continue
            k = max(defects, key=row.__getitem__)  # the first in class order on a tie
            q = row[k]
            band = "act" if q >= high[k] else "review" if q >= low[k] else "log"
            out.append(Prediction(classes[k], q, p, band))
        return out

    @cached_property
    def _plan(self) -> tuple[int, list[int], dict[int, float], dict[int, float]]:
        """What :meth:`decide` looks up on every call: where ``ok`` and the defect classes
        are, and each defect class's thresholds by its position."""
        defects = [i for i, c in enumerate(self.classes) if c != OK_CLASS]
        return (
            self.classes.index(OK_CLASS),
            defects,
            dict(zip(defects, self.high, strict=True)),
            dict(zip(defects, self.low, strict=True)),
        )


def _check_manifest(manifest) -> None:
    if not isinstance(manifest, dict):
        raise ModelError("manifest_invalid", "manifest is not a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError("manifest_invalid", f"manifest lacks {', '.join(missing)}")
    classes = manifest["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or len(set(classes)) != len(classes)
        or OK_CLASS not in classes
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ModelError("manifest_invalid", "classes must be distinct names including 'ok'")
    try:
        shape = manifest["input"]["shape"]
        ok_input = (
            len(shape) == 4
            and shape[1] == 1
            and shape[2] == shape[3]
            and int(shape[2]) > 0
            and manifest["input"]["dtype"] == "float32"
            and list(manifest["input"]["value_range"]) == [0, 255]
        )
        map_shape = manifest["outputs"]["defect_map"]["shape"]
        probs_shape = manifest["outputs"]["probs"]["shape"]
        ok_outputs = len(map_shape) == 4 and len(probs_shape) == 2
        ok_outputs = ok_outputs and probs_shape[1] == len(classes)
        pitch = float(manifest["pixel_pitch_um"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError("manifest_invalid", f"input/outputs unreadable: {exc!r}") from exc
    if not ok_input:
        raise ModelError(
            "manifest_invalid", "input must be float32 [N, 1, S, S] with value_range [0, 255]"
        )
    if not ok_outputs:
        raise ModelError(
            "manifest_invalid", "outputs must be probs [N, C] and defect_map [N, 1, H, W]"
        )
    if not (math.isfinite(pitch) and pitch > 0):
        raise ModelError("manifest_invalid", "pixel_pitch_um must be positive")
    sha = manifest["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64):
        raise ModelError("manifest_invalid", "sha256 must be 64 hex digits")


class VisionModel:
    """One loaded, checked model with one onnxruntime session.

    Build with :meth:`load`. ``infer`` gives raw probabilities and defect maps, ``decide``
    applies the manifest's thresholds, ``predict`` does both. The session is created with
    ``intra_op_threads`` and one inter-op thread, all graph optimisations, CPU only; a
    worker process runs one model with one intra-op thread and scales by processes.
    """

    def __init__(
        self,
        *,
        manifest: dict,
        manifest_path: Path,
        onnx_path: Path,
        session: ort.InferenceSession,
        thresholds: Thresholds,
        intra_op_threads: int,
    ):
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.onnx_path = onnx_path
        self.name: str = manifest["name"]
        self.version: str = manifest["version"]
        self.sha256: str = manifest["sha256"]
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        self.thresholds = thresholds
        self.threshold_set: str = thresholds.set_id
        self.input_size: int = int(manifest["input"]["shape"][2])
        self.map_size: tuple[int, int] = tuple(manifest["outputs"]["defect_map"]["shape"][2:])
        self.pixel_pitch_um: float = float(manifest["pixel_pitch_um"])
        self.intra_op_threads = intra_op_threads
        self._session = session
        self._input_name: str = manifest["input"].get("name", "image")

    def __repr__(self) -> str:
        return f"<VisionModel {self.name} {self.version} thresholds {self.threshold_set}>"

    @classmethod
    def load(
        cls,
        manifest_path,
        *,
        onnx_path=None,
        intra_op_threads: int = 1,
        expected_sha256: str | None = None,
    ) -> VisionModel:
        """Read the manifest, check the ONNX file's sha256, open one session.

        ``onnx_path`` defaults to the manifest's ``file`` next to the manifest. The file's
        sha256 must equal the manifest's, and ``expected_sha256`` too when given (the value a
        registry approved). Raises :class:`ModelError`: ``file_missing``,
        ``checksum_mismatch`` or ``manifest_invalid``; nothing is loaded on a refusal.
        """
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise ModelError("file_missing", f"manifest {manifest_path} not found")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError("manifest_invalid", f"manifest is not JSON: {exc}") from exc
        _check_manifest(manifest)
        thresholds = Thresholds.from_dict(manifest["thresholds"], manifest["classes"])
        if thresholds.set_id != manifest["threshold_set"]:
            raise ModelError(
                "manifest_invalid",
                f"threshold_set {manifest['threshold_set']!r} does not match the thresholds "
                f"({thresholds.set_id})",
            )
        if onnx_path is None:
            onnx_path = manifest_path.parent / manifest.get(
                "file", f"{manifest['name']}-{manifest['version']}.onnx"
            )
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelError("file_missing", f"model file {onnx_path} not found")
        actual = file_sha256(onnx_path)
        if actual != manifest["sha256"]:
            raise ModelError(
                "checksum_mismatch",
                f"{onnx_path.name} has sha256 {actual}, the manifest says {manifest['sha256']}",
            )
        if expected_sha256 is not None and actual != expected_sha256:
            raise ModelError(
                "checksum_mismatch",
                f"{onnx_path.name} has sha256 {actual}, expected {expected_sha256}",
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError("manifest_invalid", f"onnxruntime cannot load it: {exc}") from exc
        _check_session(session, manifest)
        return cls(
            manifest=manifest,
            manifest_path=manifest_path,
            onnx_path=onnx_path,
            session=session,
            thresholds=thresholds,
            intra_op_threads=int(intra_op_threads),
        )

    def warm_up(self, batch: int = 32) -> None:
        """Run one batch of mid-grey crops so the first real frame pays no allocation cost."""
        s = self.input_size
        self.infer(np.full((batch, s, s), 128, np.uint8))

    def _as_batch(self, crops) -> np.ndarray:
        s = self.input_size
        if not isinstance(crops, np.ndarray):
            raise ModelError("bad_input", f"crops must be a numpy array, got {type(crops)}")
        if crops.dtype == np.uint8:
            if crops.ndim != 3 or crops.shape[1:] != (s, s):
                raise ModelError(
                    "bad_input", f"uint8 crops must be (N, {s}, {s}), got {crops.shape}"
                )
            return crops.astype(np.float32)[:, None]
        if crops.dtype == np.float32:
            if crops.ndim != 4 or crops.shape[1:] != (1, s, s):
                raise ModelError(
                    "bad_input", f"float32 crops must be (N, 1, {s}, {s}), got {crops.shape}"
                )
            if crops.size and not (
                np.isfinite(crops).all() and crops.min() >= 0.0 and crops.max() <= 255.0
            ):
                raise ModelError("bad_input", "float32 crops must be grey values in 0..255")
            return np.ascontiguousarray(crops)
        raise ModelError("bad_input", f"crops must be uint8 or float32, got {crops.dtype}")

    def _into(self, crops, out) -> np.ndarray:
        """uint8 crops converted into the first rows of ``out``, a float32 ``(M, 1, S, S)``
        C-contiguous buffer with M >= N (the rows beyond the batch are left alone)."""
        s = self.input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8:
            raise ModelError("bad_input", "a batch buffer takes uint8 crops only")
        if crops.ndim != 3 or crops.shape[1:] != (s, s):
            raise ModelError("bad_input", f"uint8 crops must be (N, {s}, {s}), got {crops.shape}")
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != np.float32
            or out.ndim != 4
            or out.shape[1:] != (1, s, s)
        ):
            raise ModelError("bad_input", f"the batch buffer must be float32 (M, 1, {s}, {s})")
        if not out.flags.c_contiguous:
            raise ModelError("bad_input", "the batch buffer must be C-contiguous")
        if out.shape[0] < crops.shape[0]:
            raise ModelError(
                "bad_input", f"the batch buffer has {out.shape[0]} rows for {crops.shape[0]} crops"
            )
        x = out[: crops.shape[0]]
        np.copyto(x[:, 0], crops)
        return x

    def infer(
        self, crops: np.ndarray, *, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(N, C)`` and defect maps ``(N, H, W)``, both float32.

        ``crops`` are uint8 ``(N, S, S)`` or float32 ``(N, 1, S, S)`` grey values 0..255.
        With ``out`` (uint8 crops only), the float32 input is written into that buffer
        instead of a new array: a worker keeps one for its life. Raises
        ModelError("bad_input") on any other shape or dtype; an empty batch gives empty
        arrays.
        """
        x = self._as_batch(crops) if out is None else self._into(crops, out)
        if x.shape[0] == 0:
            h, w = self.map_size
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, h, w), np.float32)
        probs, maps = self._session.run(["probs", "defect_map"], {self._input_name: x})
        return probs, maps[:, 0]

    def decide(self, probs: np.ndarray) -> list[Prediction]:
        """The manifest's decision rule on given probabilities (see :meth:`Thresholds.decide`)."""
        return self.thresholds.decide(probs)

    def predict(
        self, crops, *, out: np.ndarray | None = None
    ) -> tuple[list[Prediction], np.ndarray]:
        """``infer`` then ``decide``: one :class:`Prediction` per crop, plus the defect maps
        (``out``: see :meth:`infer`)."""
        probs, maps = self.infer(crops, out=out)
        return self.decide(probs), maps


def _check_session(session: ort.InferenceSession, manifest: dict) -> None:
    """The graph must take and give what the manifest declares."""
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    name = manifest["input"].get("name", "image")
    if len(inputs) != 1 or inputs[0].name != name or inputs[0].type != "tensor(float)":
        raise ModelError("manifest_invalid", f"graph input is not one float tensor {name!r}")
    if list(inputs[0].shape[1:]) != list(manifest["input"]["shape"][1:]):
        raise ModelError("manifest_invalid", f"graph input shape {inputs[0].shape} differs")
    for out in ("probs", "defect_map"):
        if out not in outputs:
            raise ModelError("manifest_invalid", f"graph has no output {out!r}")
        declared = manifest["outputs"][out]["shape"][1:]
        if list(outputs[out].shape[1:]) != list(declared):
            raise ModelError(
                "manifest_invalid", f"graph output {out} shape {outputs[out].shape} differs"
            )


def golden_check(model: VisionModel, golden_path, *, strict: bool = False) -> dict:
    """Run the golden crops and compare with the outputs stored at training time.

    Passes when the largest absolute differences of ``probs`` and ``defect_map`` are within
    the manifest's ``golden.tolerance`` and every crop gets the stored class after
    thresholds. Returns the figures; with ``strict`` a failure raises
    ModelError("golden_failed"). A missing file raises ``file_missing``; a file whose sha256
    differs from the manifest's ``golden.sha256`` raises ``checksum_mismatch``.
    """
    golden_path = Path(golden_path)
    spec = model.manifest.get("golden")
    if not isinstance(spec, dict) or "tolerance" not in spec:
        raise ModelError("manifest_invalid", "manifest has no golden.tolerance")
    if not golden_path.is_file():
        raise ModelError("file_missing", f"golden set {golden_path} not found")
    if "sha256" in spec and file_sha256(golden_path) != spec["sha256"]:
        raise ModelError("checksum_mismatch", f"{golden_path.name} differs from the manifest")
    try:
        with np.load(golden_path, allow_pickle=False) as data:
            images = data["images"]
            want_probs = data["probs"]
            want_map = data["defect_map"]
            want_cls = [str(c) for c in data["expected_class"]]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError("golden_failed", f"golden set unreadable: {exc}") from exc
    tolerance = float(spec["tolerance"])
    probs, maps = model.infer(images)
    if probs.shape != want_probs.shape or maps.shape != want_map.shape:
        raise ModelError("golden_failed", "golden outputs have other shapes than the model's")
    got_cls = [p.cls for p in model.decide(probs)]
    result = {
        "passed": False,
        "count": int(images.shape[0]),
        "max_abs_diff_probs": float(np.abs(probs - want_probs).max(initial=0.0)),
        "max_abs_diff_map": float(np.abs(maps - want_map).max(initial=0.0)),
        "tolerance": tolerance,
        "class_mismatches": sum(a != b for a, b in zip(got_cls, want_cls, strict=True)),
    }
    result["passed"] = bool(
        result["count"] > 0
        and result["count"] == int(spec.get("count", result["count"]))
        and result["max_abs_diff_probs"] <= tolerance
        and result["max_abs_diff_map"] <= tolerance
        and result["class_mismatches"] == 0
    )
    if strict and not result["passed"]:
        raise ModelError("golden_failed", f"golden set failed: {result}")
    return result


def default_model_paths() -> tuple[Path, Path, Path]:
    """Manifest, ONNX file and golden set of the committed default model."""
    stem = MODEL_FILES_DIR / f"{DEFAULT_MODEL_NAME}-{DEFAULT_MODEL_VERSION}"
    return (
        stem.with_name(stem.name + ".manifest.json"),
        stem.with_name(stem.name + ".onnx"),
        stem.with_name(stem.name + ".golden.npz"),
    )
