"""robrep: how robust is a learned representation, really?

Python API::

    import robrep
    learner = robrep.train("se-adversarial", "mnist5k", epochs=30)
    learner = robrep.load(path)                 # a checkpoint folder
    mu, logvar = learner.encode(x)              # x: (N, C, H, W) in [0, 1]
    df = robrep.bench(learners=["vae", "se-adversarial"], out="runs/b")   # a pandas DataFrame
    df = robrep.bench(learners=[my_module, "pkg.mod:make_encoder",          # any encoder, as it is
                                robrep.Encoder(resnet, preprocessing="imagenet", name="resnet18")])
"""
from __future__ import annotations

import logging

from robrep._version import __version__  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

from robrep.checkpoint import CheckpointError, load_checkpoint as load, save_checkpoint as save  # noqa: E402
from robrep.data import Dataset, DatasetError, Split, Task, list_datasets, load_dataset  # noqa: E402
from robrep.learners import create_learner, list_learners  # noqa: E402
from robrep.train import train  # noqa: E402
from robrep.encoders import ContractError, Encoder, LearnerError  # noqa: E402
from robrep.harness import BenchConfig, bench  # noqa: E402
from robrep.sweep import sweep  # noqa: E402

__all__ = [
    "__version__", "load", "save", "train", "bench", "BenchConfig", "sweep", "create_learner", "list_learners",
    "load_dataset", "list_datasets", "Dataset", "Split", "Task", "DatasetError", "CheckpointError",
    "Encoder", "ContractError", "LearnerError",
]
