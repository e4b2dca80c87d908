"""Tasks: data + loss + metrics. Importing this package registers them."""

from patchbench.tasks import next_token  # noqa: F401
