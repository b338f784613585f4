"""``python -m mlff.md_workflows.cli``: the ``mlff`` command line."""

import sys

from mlff.md_workflows.cli import main

sys.exit(main())
