"""Studies: expand a recipe into runs, run them, aggregate, report."""
