"""Tasks: data + loss + metrics. Importing this package registers them."""

from patchbench.tasks import (  # noqa: F401
    bits,
    cyp3a4,
    digit_addition,
    image_classification,
    image_patches,
    listops,
    next_token,
    speech_commands,
)
