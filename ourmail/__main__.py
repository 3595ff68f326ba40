"""``python -m ourmail …``: the admin commands."""

import sys

from ourmail.admin.cli import main

sys.exit(main())
