"""`python -m cleo_operator.cli.plugin`: the same as the `kubectl-cleo` script."""

import sys

from cleo_operator.cli.plugin import main

sys.exit(main())
