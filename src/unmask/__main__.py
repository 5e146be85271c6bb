"""``python -m unmask ...`` (and ``accelerate launch -m unmask eval ...``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
