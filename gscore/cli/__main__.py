"""``python -m gscore.cli``."""

from gscore.cli.main import main

raise SystemExit(main())
