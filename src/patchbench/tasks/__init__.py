"""Tasks: data + loss + metrics. Importing this package registers them."""

from patchbench.tasks import next_token  # noqa: F401
from patchbench.tasks import image_classification  # noqa: F401
from patchbench.tasks import bits, cyp3a4, digit_addition, image_patches, speech_commands  # noqa: F401
