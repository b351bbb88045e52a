"""python -m analysis --study NAME: the same as python -m analysis.report."""

import sys

from analysis.report import main

sys.exit(main())
