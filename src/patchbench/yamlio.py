"""YAML as a user means it: `1e-3`, `1e300`, `.5` and `-1e-5` are numbers.

PyYAML implements YAML 1.1, whose float pattern needs a dot in the mantissa and a sign in the
exponent, so `lr: 1e-3` (the README's own example) would arrive as the string "1e-3". `Loader` is a
SafeLoader whose float resolver takes the YAML 1.2 core-schema forms as well; everything else
(and everything unsafe) is as in `yaml.safe_load`. Recipes, `key=value` overrides and a run's
config.yaml are all read with it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT = re.compile(r"""^(?:
      [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5  1.  1.5e3  1.5e-3
    | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                 # 1e-3  1e300  -1E5
    | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?          # .5  -.5e-2
    | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*      # sexagesimal, as YAML 1.1
    | [-+]?\.(?:inf|Inf|INF)
    | \.(?:nan|NaN|NAN)
)$""", re.VERBOSE)


class Loader(yaml.SafeLoader):
    """SafeLoader with the corrected float resolver (a class of its own: SafeLoader is left as it is)."""


Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse one YAML document safely, reading 1e-3 as a float."""
    return yaml.load(text, Loader=Loader)
