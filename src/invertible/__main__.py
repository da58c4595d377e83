"""``python -m invertible``: the command line (see :mod:`invertible.cli`)."""

from invertible.cli import main

if __name__ == "__main__":
    main()
