"""``python -m lib_lora_train``: the command line (see lib_lora_train.cli)."""

import sys

from lib_lora_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
