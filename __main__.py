"""``python -m raygan``: the ``raygan`` command (:mod:`raygan.cli`)."""
import sys

from raygan.cli import main

if __name__ == "__main__":
    sys.exit(main())
