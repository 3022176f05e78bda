"""`python -m cli`: the `flowbill` command, for processes started without the installed script."""

import sys

from cli.main import main

sys.exit(main())
