"""`python -m devstack.localstack up|down|env [--dir .state]`."""

import sys

from devstack.localstack.command import main

if __name__ == "__main__":
    sys.exit(main())
