"""Per-subject anomaly models over tool-call features, trained from the audit log.

A model is trained per subject (the gateway's ``actor``) once it has ``min_samples`` calls;
before that the subject is in *cold start* and calls are not scored (the stage then allows
or asks, as configured, and says so in the audit). Two detectors are fitted on the same
features and a call is anomalous when either fires (``Assessment.rule`` says which):

- ``forest``: a scikit-learn Isolation Forest; the score is ``s(x) = 2^(-E[h(x)] / c(n))``
  in (0, 1], about 0.5 or less is ordinary, near 1 isolated at once;
- ``distance``: the robust distance ``sqrt(sum(min(z_j, 20)^2))`` of the features from the
  training medians (``z_j = |x_j - median_j| / spread_j``). An isolation forest scores a
  point *outside* the training range about as it scores the most extreme training points
  (the point follows the outermost branch), so a call far beyond anything seen on one or
  two features (a burst of calls, a path leaving the workspace) needs this second view.

Both thresholds are learned from the training rows after the first 20% (the warm-up, where
every tool and host is still new): the forest's 99th percentile plus 0.02 (at least 0.55,
or ``threshold`` from config) and the distance's 99.5th percentile (at least 6).

The fitted forest is compiled to plain arrays (per tree: children, feature, threshold and
the path length of each leaf, exactly as scikit-learn's ``score_samples`` computes it), so
scoring a call walks ~100 short trees in Python (well under a millisecond) and loading a
model does not import scikit-learn. Models are saved with joblib beside an HMAC-SHA256 of
the file made with a key only this user can read, kept apart from the models
(``HOME/keys/anomaly-models.key``, directory 0700), so the model directory alone gives no
way to sign a model. A model is read once, as a regular file (no symlink, no FIFO), its HMAC
checked over those bytes, and those same bytes are unpickled: no second read an attacker
could swap. A model whose HMAC does not match is refused, not loaded (joblib files are
pickles).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import os
import re
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.config import paths
from bastion.errors import BastionError
from bastion.intelligence.features import FEATURE_NAMES, CallView, SubjectState, replay, vector

MODEL_VERSION = 2
Z_CAP = 20.0
WARM_UP = 0.2
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_F32 = struct.Struct(f"{len(FEATURE_NAMES)}f")


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

    status: str  # "scored" | "cold_start"
    score: float | None = None
    threshold: float | None = None
    anomalous: bool = False
    samples: int = 0
    needed: int = 0
    drivers: list[Driver] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    baseline: float | None = None
    rule: str | None = None  # "forest" | "distance" when anomalous
    distance: float | None = None
    distance_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping for the audit record."""
        out: dict[str, Any] = {"status": self.status, "anomalous": self.anomalous}
        if self.status == "scored":
            out.update(score=round(self.score or 0.0, 4), threshold=round(self.threshold or 0, 4),
                       distance=round(self.distance or 0.0, 2),
                       distance_threshold=round(self.distance_threshold or 0.0, 2),
                       rule=self.rule, drivers=[d.to_dict() for d in self.drivers],
                       features={k: round(v, 3) for k, v in self.features.items()})
        elif self.status == "cold_start":
            out.update(samples=self.samples, needed=self.needed)
        return out


def average_path_length(n: float) -> float:
    """Return c(n), the mean path length of an unsuccessful BST search (sklearn's formula)."""
    if n <= 1:
        return 0.0
    if n <= 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + 0.5772156649015329) - 2.0 * (n - 1.0) / n


@dataclass(slots=True)
class CompiledTree:
    """One isolation tree as flat lists (leaf: ``left == -1``, ``value`` = its path length)."""

    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    value: list[float]


def compile_forest(forest: Any) -> tuple[list[CompiledTree], float]:
    """Return the trees of a fitted ``IsolationForest`` and the score's denominator."""
    trees = []
    for est, feats, depths, avg in zip(forest.estimators_, forest.estimators_features_,
                                       forest._decision_path_lengths,
                                       forest._average_path_length_per_tree, strict=True):
        t = est.tree_
        trees.append(CompiledTree(
            [int(v) for v in t.children_left], [int(v) for v in t.children_right],
            [int(feats[f]) if f >= 0 else -1 for f in t.feature],
            [float(v) for v in t.threshold],
            [float(d) + float(a) - 1.0 for d, a in zip(depths, avg, strict=True)]))
    return trees, len(trees) * average_path_length(forest._max_samples)


@dataclass(slots=True)
class SubjectModel:
    """A trained model for one subject plus what explaining and thresholding need."""

    subject: str
    trees: list[CompiledTree]
    denominator: float
    threshold: float
    baseline: float  # median training score
    median: list[float]
    scale: list[float]
    distance_threshold: float
    samples: int
    trained_at: float
    version: int = MODEL_VERSION

    def forest_score(self, x: list[float]) -> float:
        """Return the isolation-forest anomaly score of one feature vector."""
        xf = _F32.unpack(_F32.pack(*x))  # trees split float32 values, as scikit-learn does
        total = 0.0
        for t in self.trees:
            left, right, feat, thr = t.left, t.right, t.feature, t.threshold
            node = 0
            while left[node] != -1:
                node = left[node] if xf[feat[node]] <= thr[node] else right[node]
            total += t.value[node]
        return float(2.0 ** (-total / self.denominator))

    def score(self, feats: dict[str, float]) -> tuple[float, float, list[Driver]]:
        """Return (forest score, robust distance, the features that drove them)."""
        x = vector(feats)
        drivers = []
        acc = 0.0
        for name, v, med, sc in zip(FEATURE_NAMES, x, self.median, self.scale, strict=True):
            z = abs(v - med) / sc
            acc += min(z, Z_CAP) ** 2
            if z >= 3.0:
                drivers.append(Driver(name, v, med, z))
        drivers.sort(key=lambda d: -d.z)
        return self.forest_score(x), math.sqrt(acc), drivers[:4]


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
    trees, denominator = compile_forest(forest)
    scores = -forest.score_samples(X)
    warm = int(len(X) * WARM_UP)
    learned = max(0.55, float(np.quantile(scores[warm:], 0.99)) + 0.02)
    med = np.median(X, axis=0)
    q75, q25 = np.quantile(X, 0.75, axis=0), np.quantile(X, 0.25, axis=0)
    mad = np.median(np.abs(X - med), axis=0) * 1.4826
    scale = np.maximum.reduce([(q75 - q25) / 1.349, mad, np.std(X, axis=0),
                               np.full(X.shape[1], 0.05)])
    dist = np.sqrt((np.minimum(np.abs(X - med) / scale, Z_CAP) ** 2).sum(axis=1))
    dist_threshold = max(6.0, float(np.quantile(dist[warm:], 0.995)))
    return SubjectModel(subject, trees, denominator,
                        threshold if threshold is not None else learned,
                        float(np.median(scores)), [float(v) for v in med],
                        [float(v) for v in scale], dist_threshold, len(rows), time.time())


class AnomalyDetector:
    """Per-subject models: train from calls, save/load (HMAC-checked), score live calls."""

    def __init__(self, model_dir: Path, *, min_samples: int = 50, n_estimators: int = 100,
                 threshold: float | None = None, key_path: Path | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.key_path = key_path or paths.home() / "keys" / "anomaly-models.key"
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
        score, distance, drivers = model.score(feats)
        rule = ("forest" if score >= model.threshold
                else "distance" if distance >= model.distance_threshold else None)
        return Assessment("scored", score, model.threshold, rule is not None, model.samples,
                          self.min_samples, drivers, feats, model.baseline, rule, distance,
                          model.distance_threshold)

    # ---- persistence -------------------------------------------------------------------------
    def _key(self) -> bytes:
        path = self.key_path
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        (self.model_dir / "model.key").unlink(missing_ok=True)  # older versions kept it here
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
            data = _read_regular(path)
            want = hmac.new(key, data, hashlib.sha256).hexdigest()
            if not mac_path.exists() or not hmac.compare_digest(
                    mac_path.read_text().strip(), want):
                raise IntelError(f"anomaly model {path.name} fails its integrity check",
                                 fix="retrain with: bastion intel train")
            model = joblib.load(io.BytesIO(data))  # the bytes that were checked, not the path
            if not isinstance(model, SubjectModel) or model.version != MODEL_VERSION:
                raise IntelError(f"anomaly model {path.name} is from another version",
                                 fix="retrain with: bastion intel train")
            self.models[model.subject] = model
        return len(self.models)


def _read_regular(path: Path) -> bytes:
    """Read ``path`` once: a regular file, not through a symlink (a FIFO or device is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise IntelError(f"anomaly model {path.name} cannot be read: {exc.strerror}",
                         fix="retrain with: bastion intel train") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IntelError(f"anomaly model {path.name} is not a regular file",
                             fix="remove it and retrain with: bastion intel train")
        return fh.read()
