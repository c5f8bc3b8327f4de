"""``python -m dscl_plugin.cli [train|eval|compare] ...``."""

import sys

from dscl_plugin.cli import main

sys.exit(main())
