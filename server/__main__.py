"""`python -m nitrogen_server` = the `nitrogen-server` command."""

import sys

from .cli import main

sys.exit(main())
