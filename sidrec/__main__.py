"""``python -m sidrec`` is the ``sidrec`` command."""

from sidrec.cli import main

raise SystemExit(main())
