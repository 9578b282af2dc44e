"""Per-subject Isolation Forests over tool-call features, trained from the audit log.

A model is trained per subject (the gateway's ``actor``) once it has ``min_samples`` calls;
before that the subject is in *cold start* and calls are not scored (the stage then allows
or asks, as configured, and says so in the audit). Scores are scikit-learn's anomaly score
``s(x) = 2^(-E[h(x)] / c(n))`` in (0, 1]: about 0.5 or less is ordinary, near 1 is isolated
at once. The flagging threshold is learned from the training scores (their 99th
percentile plus 0.02, at least 0.55) unless configured.

An isolation forest scores a point *outside* the training range about as it scores the most
extreme training points (the point follows the outermost branch), so a call that is novel on
several features at once scores only a little above the threshold. A second, explainable
rule therefore also flags a call whose features deviate strongly (robust z >= 6 against the
training median and spread) on two or more features while its forest score is above the
midpoint between the training median and the threshold. ``Assessment.rule`` says which
rule fired (``forest`` or ``deviation``).

Models are saved with joblib (a pickle) beside an HMAC-SHA256 of the file made with a key
only this user can read, and a model whose HMAC does not match is refused, not loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import BastionError
from bastion.intelligence.features import FEATURE_NAMES, CallView, SubjectState, replay, vector

MODEL_VERSION = 1
STRONG_Z = 6.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class IntelError(BastionError):
    """An intelligence component failed (model file, feed file, SIEM sink)."""


@dataclass(slots=True)
class Driver:
    """A feature that made a call unusual: its value, the training median and robust z."""

    feature: str
    value: float
    median: float
    z: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"feature": self.feature, "value": round(self.value, 3),
                "median": round(self.median, 3), "z": round(self.z, 1)}


@dataclass(slots=True)
class Assessment:
    """The anomaly verdict on one call."""

    status: str  # "scored" | "cold_start" | "disabled"
    score: float | None = None
    threshold: float | None = None
    anomalous: bool = False
    samples: int = 0
    needed: int = 0
    drivers: list[Driver] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    baseline: float | None = None
    rule: str | None = None  # "forest" | "deviation" when anomalous

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping for the audit record."""
        out: dict[str, Any] = {"status": self.status, "anomalous": self.anomalous}
        if self.status == "scored":
            out.update(score=round(self.score or 0.0, 4), threshold=round(self.threshold or 0, 4),
                       rule=self.rule,
                       drivers=[d.to_dict() for d in self.drivers],
                       features={k: round(v, 3) for k, v in self.features.items()})
        elif self.status == "cold_start":
            out.update(samples=self.samples, needed=self.needed)
        return out


@dataclass(slots=True)
class SubjectModel:
    """A trained forest for one subject plus what explaining and thresholding need."""

    subject: str
    forest: Any
    threshold: float
    baseline: float  # median training score
    median: list[float]
    scale: list[float]
    samples: int
    trained_at: float
    version: int = MODEL_VERSION

    def score(self, feats: dict[str, float]) -> tuple[float, list[Driver]]:
        """Return the anomaly score of one feature mapping and the features that drove it."""
        x = vector(feats)
        s = float(-self.forest.score_samples([x])[0])
        drivers = []
        for name, v, med, sc in zip(FEATURE_NAMES, x, self.median, self.scale, strict=True):
            z = abs(v - med) / sc
            if z >= 3.0:
                drivers.append(Driver(name, v, med, z))
        drivers.sort(key=lambda d: -d.z)
        return s, drivers[:4]


@dataclass(slots=True)
class TrainReport:
    """What ``train`` did for one subject."""

    subject: str
    samples: int
    status: str  # "trained" | "cold_start"
    threshold: float | None = None
    seconds: float = 0.0


def _fit(subject: str, rows: list[list[float]], *, n_estimators: int,
         threshold: float | None, seed: int = 0) -> SubjectModel:
    np = require("numpy", extra="intelligence", feature="anomaly detection")
    ensemble = require("sklearn.ensemble", extra="intelligence", feature="anomaly detection")
    X = np.asarray(rows, dtype=float)
    forest = ensemble.IsolationForest(n_estimators=n_estimators, contamination="auto",
                                      random_state=seed, n_jobs=1)
    forest.fit(X)
    scores = -forest.score_samples(X)
    learned = max(0.55, float(np.quantile(scores, 0.99)) + 0.02)
    med = np.median(X, axis=0)
    q75, q25 = np.quantile(X, 0.75, axis=0), np.quantile(X, 0.25, axis=0)
    mad = np.median(np.abs(X - med), axis=0) * 1.4826
    scale = np.maximum.reduce([(q75 - q25) / 1.349, mad, np.std(X, axis=0),
                               np.full(X.shape[1], 0.05)])
    return SubjectModel(subject, forest, threshold if threshold is not None else learned,
                        float(np.median(scores)), [float(v) for v in med],
                        [float(v) for v in scale], len(rows), time.time())


class AnomalyDetector:
    """Per-subject models: train from calls, save/load (HMAC-checked), score live calls."""

    def __init__(self, model_dir: Path, *, min_samples: int = 50, n_estimators: int = 100,
                 threshold: float | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.min_samples = min_samples
        self.n_estimators = n_estimators
        self.threshold = threshold
        self.models: dict[str, SubjectModel] = {}

    # ---- training ----------------------------------------------------------------------------
    def train(self, calls: Iterable[CallView]) -> tuple[list[TrainReport], dict[str, SubjectState]]:
        """Fit a model per subject with enough calls; return reports and the replayed states."""
        rows, states = replay(calls)
        reports = []
        for subject, xs in sorted(rows.items()):
            start = time.perf_counter()
            if len(xs) < self.min_samples:
                self.models.pop(subject, None)
                reports.append(TrainReport(subject, len(xs), "cold_start"))
                continue
            model = _fit(subject, xs, n_estimators=self.n_estimators, threshold=self.threshold)
            self.models[subject] = model
            reports.append(TrainReport(subject, len(xs), "trained", model.threshold,
                                       time.perf_counter() - start))
        return reports, states

    # ---- scoring -----------------------------------------------------------------------------
    def assess(self, call: CallView, state: SubjectState) -> Assessment:
        """Score ``call`` against its subject's model (cold start without one)."""
        feats = state.features(call)
        model = self.models.get(call.subject)
        if model is None:
            return Assessment("cold_start", samples=state.calls, needed=self.min_samples,
                              features=feats)
        score, drivers = model.score(feats)
        rule = None
        if score >= model.threshold:
            rule = "forest"
        elif (sum(1 for d in drivers if d.z >= STRONG_Z) >= 2
              and score >= (model.baseline + model.threshold) / 2):
            rule = "deviation"
        return Assessment("scored", score, model.threshold, rule is not None, model.samples,
                          self.min_samples, drivers, feats, model.baseline, rule)

    # ---- persistence -------------------------------------------------------------------------
    def _key(self) -> bytes:
        path = self.model_dir / "model.key"
        if not path.exists():
            self.model_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(os.urandom(32).hex())
        return bytes.fromhex(path.read_text().strip())

    def _file(self, subject: str) -> Path:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:8]
        return self.model_dir / f"{_SAFE.sub('_', subject)[:40]}-{digest}.joblib"

    def save(self) -> list[Path]:
        """Write every model (joblib) with its HMAC; drop files of subjects without a model."""
        joblib = require("joblib", extra="intelligence", feature="anomaly models")
        self.model_dir.mkdir(parents=True, exist_ok=True)
        key = self._key()
        written = []
        for subject, model in self.models.items():
            path = self._file(subject)
            tmp = path.with_suffix(".tmp")
            joblib.dump(model, tmp)
            mac = hmac.new(key, tmp.read_bytes(), hashlib.sha256).hexdigest()
            path.with_suffix(".hmac").write_text(mac + "\n")
            os.replace(tmp, path)
            written.append(path)
        keep = {p.name for p in written}
        for old in self.model_dir.glob("*.joblib"):
            if old.name not in keep:
                old.unlink()
                old.with_suffix(".hmac").unlink(missing_ok=True)
        return written

    def load(self) -> int:
        """Load every saved model whose HMAC verifies; return how many were loaded."""
        if not self.model_dir.exists():
            return 0
        joblib = require("joblib", extra="intelligence", feature="anomaly models")
        key = self._key()
        self.models.clear()
        for path in sorted(self.model_dir.glob("*.joblib")):
            mac_path = path.with_suffix(".hmac")
            data = path.read_bytes()
            want = hmac.new(key, data, hashlib.sha256).hexdigest()
            if not mac_path.exists() or not hmac.compare_digest(
                    mac_path.read_text().strip(), want):
                raise IntelError(f"anomaly model {path.name} fails its integrity check",
                                 fix="retrain with: bastion intel train")
            model = joblib.load(path)
            if not isinstance(model, SubjectModel) or model.version != MODEL_VERSION:
                raise IntelError(f"anomaly model {path.name} is from another version",
                                 fix="retrain with: bastion intel train")
            self.models[model.subject] = model
        return len(self.models)
