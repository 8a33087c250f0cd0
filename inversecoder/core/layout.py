"""Where a run's outputs live: the one place that names the folders and files under `output_dir`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The folders and files of one run's output folder (`RunConfig.layout`)."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def train(self) -> Path:
        return self.root / "train"  # InverseCoder's checkpoints

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_generator(self) -> Path:
        return self.root / "eval-generator"

    @property
    def eval_base(self) -> Path:
        return self.root / "eval-base"

    @property
    def generator(self) -> Path:
        """Step 0's folder (data, checkpoints, model, evaluation) when no generator is named."""
        return self.root / "generator"

    @property
    def generator_model(self) -> Path:
        return self.generator / "model"

    @property
    def generator_data(self) -> Path:
        return self.generator / "data"  # the original pairs M is trained on

    @property
    def generator_train(self) -> Path:
        return self.generator / "train"  # M's checkpoints

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def model_calls(self) -> Path:
        return self.cache / "model_calls.sqlite"

    @property
    def benchmark_cache(self) -> Path:
        return self.cache / "benchmarks"

    @property
    def embeddings(self) -> Path:
        return self.cache / "embeddings.sqlite"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one run writing into this folder; holds that run's pid, host, command, start."""
        return self.root / ".lock"

    @property
    def steps(self) -> Path:
        return self.root / "steps.json"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.yaml"

    @property
    def run_summary_md(self) -> Path:
        return self.root / "run_summary.md"

    @property
    def run_summary_json(self) -> Path:
        return self.root / "run_summary.json"


EVAL_RESULTS = "eval_results.json"
MANIFEST = "manifest.json"
BUILD_INFO = "build_info.json"
BUILD_CONFIG = "build_config.yaml"
BUILD_REPORT = "build_report.json"
TRAINING_CONFIG = "training_config.json"
TRAINING_LOGS = "training_logs.json"
