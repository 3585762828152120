"""``python -m cleo_operator.cli ...``: the same command as the ``cleo-operator`` script."""

import sys

from cleo_operator.cli.root import main

sys.exit(main())
