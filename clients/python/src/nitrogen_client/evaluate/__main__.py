"""``python -m nitrogen_client.evaluate`` is ``nitrogen-eval``."""

from .cli import main

raise SystemExit(main())
