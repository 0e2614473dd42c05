"""``python -m dclcomms`` is the ``dclcomms`` command."""

import sys

from dclcomms.cli import main

sys.exit(main())
