"""``python -m diffisp.cli ...``: the same as the ``diffisp`` command."""

import sys

from diffisp.cli import main

sys.exit(main())
