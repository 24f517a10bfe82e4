"""Every artifact location, relative to one workspace root.

These are the same paths dvc.yaml declares; ``tests/pipeline/test_dvc_consistency.py``
keeps the two in step. Nothing is created at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Artifact locations under ``root`` (the project directory by default)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Paths:
        return cls(Path(root) if root is not None else Path.cwd())

    def rel(self, path: Path) -> str:
        """``path`` relative to the root, POSIX style (as written in dvc.yaml)."""
        return path.relative_to(self.root).as_posix()

    # data ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def interim_dir(self) -> Path:
        """Canonical tables as imported (output of ``ingest``); never modified after."""
        return self.data_dir / "interim"

    @property
    def validated_dir(self) -> Path:
        """Canonical tables that passed validation (bad rows removed only by quarantine)."""
        return self.data_dir / "validated"

    @property
    def quarantine_dir(self) -> Path:
        """Rows that failed validation, with the reason, when quarantine is on."""
        return self.data_dir / "quarantine"

    @property
    def sessions_dir(self) -> Path:
        """Sessionized, frequency-filtered events (output of ``sessions``)."""
        return self.data_dir / "sessions"

    @property
    def splits_dir(self) -> Path:
        """One folder per split kind with ``train``/``valid``/``test`` Parquet files."""
        return self.data_dir / "splits"

    def split_dir(self, kind: str) -> Path:
        return self.splits_dir / kind

    @property
    def features_dir(self) -> Path:
        """Id maps, encoded splits and content features (output of ``features``)."""
        return self.data_dir / "features"

    # reports ------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        """Trained candidates: ``models/<name>/<split>/`` artifacts (train stage)."""
        return self.root / "models"

    def model_dir(self, name: str) -> Path:
        """One candidate's folder: an artifact per split and ``training.json``."""
        return self.models_dir / name

    @property
    def tuning_dir(self) -> Path:
        """Tuning studies: ``optuna.db`` (Optuna's RDB storage; a killed study resumes)."""
        return self.root / "tuning"

    @property
    def tuned_dir(self) -> Path:
        """The best config of each tuned model: ``tuned/<split>/<model>.yaml``."""
        return self.root / "tuned"

    def checkpoint_dir(self, name: str, split: str) -> Path:
        """Training checkpoints of one candidate on one split (not a DVC output)."""
        return self.root / "checkpoints" / name / split

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def validation_json(self) -> Path:
        return self.reports_dir / "validation.json"

    @property
    def validation_md(self) -> Path:
        return self.reports_dir / "validation.md"

    @property
    def splits_json(self) -> Path:
        return self.reports_dir / "splits.json"

    @property
    def features_json(self) -> Path:
        return self.reports_dir / "features.json"

    @property
    def metrics_json(self) -> Path:
        """``{model: {"recall@20": ...}}`` on the first evaluated split (DVC metrics)."""
        return self.reports_dir / "metrics.json"

    @property
    def evaluation_json(self) -> Path:
        """Every split's results, slices and timings."""
        return self.reports_dir / "evaluation.json"

    @property
    def leaderboard_md(self) -> Path:
        return self.reports_dir / "leaderboard.md"

    @property
    def plots_dir(self) -> Path:
        return self.reports_dir / "plots"

    @property
    def gate_json(self) -> Path:
        """The gate decision: ``passed``, ``reasons``, ``candidate``, ``champion``, rules."""
        return self.reports_dir / "gate.json"

    @property
    def gate_md(self) -> Path:
        """The gate decision for people."""
        return self.reports_dir / "gate.md"

    # serving ------------------------------------------------------------
    @property
    def bentos_dir(self) -> Path:
        """Exported Bentos (output of ``package``)."""
        return self.root / "bentos"

    @property
    def bento_archive(self) -> Path:
        """The served Bento exported as one archive (``bentoml export``), DVC-tracked."""
        return self.bentos_dir / "recpipe.bento"

    @property
    def package_json(self) -> Path:
        """What the package stage packaged: Bento and model tags, labels, index, sizes."""
        return self.reports_dir / "package.json"

    # tracking -----------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlruns"

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_lock(self) -> Path:
        """DVC's lineage record (hashed into every registered model version's tags)."""
        return self.root / "dvc.lock"

    @property
    def manifest_json(self) -> Path:
        """The ingest stage's data manifest (source, rows, content hash)."""
        return self.interim_dir / "manifest.json"
