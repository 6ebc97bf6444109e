"""``python -m tests.conformance DIR... [--suite NAME] [--json]``."""

from tests.conformance.runner import main

raise SystemExit(main())
