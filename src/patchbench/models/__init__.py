"""Model families, one per file. Importing this package registers them."""

from patchbench.models import gpt2, pacing  # noqa: F401
