"""Certified lower bounds on robust accuracy (``bounds``: IBP and CROWN) and ``robrep certify RUN``, which adds
them to a finished run's rows (``run``)."""
from robrep.certify.bounds import (
    NotCertifiable, certified, chain, lower_margins, representation_bounds, shift_attacked, shift_upper_bound,
)

__all__ = ["NotCertifiable", "certified", "chain", "lower_margins", "representation_bounds", "shift_attacked",
           "shift_upper_bound"]
