"""``python -m rlvr_lens.cli``: the same as the ``rlvr-lens`` command."""

import sys

from rlvr_lens.cli import main

sys.exit(main())
