"""The benchmark harness: `patchbench bench`. Each model measured the same way, warm-up excluded."""
