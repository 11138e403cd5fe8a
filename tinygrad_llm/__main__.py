"""``python -m tinygrad_llm``: the same as the ``tinygrad-llm`` command."""

import sys

from tinygrad_llm.cli import main

sys.exit(main())
