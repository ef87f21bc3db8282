"""``python -m robrep`` (and ``torchrun ... -m robrep``): the ``robrep`` command."""
import sys

from robrep.cli import main

sys.exit(main())
