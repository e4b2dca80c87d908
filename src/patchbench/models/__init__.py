"""Model families, one per file. Importing this package registers them."""

from patchbench.models import convmixer, fpt, gpt2, lstm, pacing, timm_models, towervit, vit  # noqa: F401  # noqa: F401  # noqa: F401
