"""Train a zoo model on M2NIST: `python train.py` (defaults), or `python train.py fit --config configs/<model>.yaml`.

Subcommands fit, validate, test and predict; `python train.py fit --print_config` shows every option.
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
