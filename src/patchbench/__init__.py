"""patchbench: cross-modal, patch-based deep-learning studies.

Importing the package registers the built-in model families and tasks (as `import timm` does).
"""

__version__ = "0.1.0"

from patchbench import models, tasks  # noqa: E402, F401 - their modules register themselves
