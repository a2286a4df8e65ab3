"""``python -m glasspool``: the same as the ``glasspool`` command."""

from .cli import main

raise SystemExit(main())
