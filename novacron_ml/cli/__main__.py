"""`python -m novacron_ml.cli`."""

import sys

from novacron_ml.cli import main

sys.exit(main())
