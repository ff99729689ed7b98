"""``python -m nitrogen_client`` is ``nitrogen-play``."""

from .cli import main

raise SystemExit(main())
