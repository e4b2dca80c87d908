"""patchbench: cross-modal, patch-based deep-learning studies."""

__version__ = "0.1.0"
