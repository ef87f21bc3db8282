"""``python -m robrep`` (and ``torchrun ... -m robrep``): the ``robrep`` command."""
import sys

from robrep.cli import main

if __name__ == "__main__":  # importing the module (documentation tools do) runs nothing
    sys.exit(main())
