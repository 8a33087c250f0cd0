"""One process of a training job that `run` launched through accelerate (`trainers/launch.py`).

The job (config, folders, how it was launched) comes in `INVERSECODER_TRAIN_JOB`; every process trains,
the main one alone logs progress and writes the model folder. Exit code 2 with one line for a user error,
as the CLI does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from inversecoder.cli import configure_logging
from inversecoder.core.config import RunConfig
from inversecoder.core.errors import UserError
from inversecoder.core.ranks import rank
from inversecoder.trainers.launch import JOB_ENV


def main() -> int:
    configure_logging()  # progress from the main process only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    text = os.environ.get(JOB_ENV)
    if not text:
        print(f"inversecoder.train_worker: no {JOB_ENV}: it is started by `inversecoder run`", file=sys.stderr)
        return 2
    job = json.loads(text)
    from inversecoder.trainers.recipe import train_model

    try:
        train_model(
            RunConfig.model_validate(job["config"]),
            Path(job["dataset_dir"]),
            Path(job["work_dir"]),
            Path(job["model_dir"]),
            distribution=job["distribution"],
        )
    except UserError as error:
        print(f"inversecoder: error (rank {rank()}): {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
