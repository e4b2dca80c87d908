"""Model families, one per file. Importing this package registers them."""

from patchbench.models import gpt2, pacing  # noqa: F401
from patchbench.models import vit, towervit, convmixer, timm_models  # noqa: F401
from patchbench.models import fpt, lstm  # noqa: F401
