"""``python -m msfem``: the :mod:`msfem.cli` command line."""

from msfem.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
