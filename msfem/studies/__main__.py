"""``python -m msfem.studies CONFIG --out DIR``."""

import sys

from msfem.studies import main

sys.exit(main())
