"""Encoders in every form a researcher has them, reaching one frozen-encoder path.

- ``contract``: what an encoder may be and return; the errors for one that breaks it.
- ``adapter``: ``Encoder``, any module as the harness sees it (x in [0, 1] -> features (N, d)),
  with the preprocessing it declares.
- ``resolve``: names, checkpoint folders, ``module:attr`` specs and Python objects, resolved
  before any work and obtained (trained, loaded or built) on a data set, with provenance.
"""
from robrep.encoders.adapter import IMAGENET, Encoder, Preprocessing, as_encoder, freeze
from robrep.encoders.contract import ContractError, LearnerError, check_encoder, check_entry_point, is_learner
from robrep.encoders.resolve import EncoderSource, Obtained, build, obtain, resolve

__all__ = [
    "Encoder", "Preprocessing", "IMAGENET", "as_encoder", "freeze", "ContractError", "LearnerError", "check_encoder",
    "check_entry_point", "is_learner", "EncoderSource", "Obtained", "build", "obtain", "resolve",
]
