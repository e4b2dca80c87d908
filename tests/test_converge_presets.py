"""The `converge` presets: 3 seeds per configuration, the same regularisation for compared models, and each one runs
end to end (with overrides that make it take seconds; the presets themselves are measured, see docs/results)."""

from pathlib import Path

import pytest

from patchbench.recipe import load_recipe, resolve_recipe
from patchbench.studies.study import study_runs

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONVERGE = ["pacing_vs_gpt2", "fpt_questions", "vit_x_convmixer", "vit_vs_towervit", "fpt_pretrained_sweep"]


@pytest.mark.parametrize("recipe", CONVERGE)
def test_converge_has_three_seeds_and_no_regularisation_asymmetry(recipe):
    runs, axes = study_runs(resolve_recipe(load_recipe(RECIPES / f"{recipe}.yaml"), "converge", []))
    groups: dict[str, set] = {}
    for r in runs:
        a = axes[r.name]
        assert r.train.seed == a["seed"]
        groups.setdefault(str({k: v for k, v in a.items() if k != "seed"}), set()).add(a["seed"])
    assert len(groups) >= 2 and all(len(seeds) == 3 for seeds in groups.values())
    for r in runs:  # no dropout / drop-path anywhere, no weight decay: the compared models are regularised alike
        drops = {k: v for k, v in vars(r.model).items() if "drop" in k and isinstance(v, float)}
        if r.model.name != "fpt":  # FPT keeps the seed's dropout 0.1 on every variant alike
            assert all(v == 0.0 for v in drops.values()), (r.name, drops)
        assert r.optim.weight_decay == 0.0


SMOKE = {
    "pacing_vs_gpt2": ["grid.seeds=[0]", "data.val_windows=4", "train.sample_tokens=0"],
    "fpt_questions": ["grid.seeds=[1]", "grid.variants=[{name: fpt}, {name: upt, model: {pretrained: false, freeze_trans: false}}]",
                      "data.test_size=64"],
    "vit_x_convmixer": ["grid.seeds=[0]", "data.train_limit=128", "data.val_limit=32", "data.image_size=16"],
    "vit_vs_towervit": ["grid.seeds=[0]", "data.train_limit=128", "data.val_limit=32"],
    "fpt_pretrained_sweep": ["grid.seeds=[1]", "data.test_steps_per_iter=2"],
}
FAST = ["train.max_steps=2", "train.eval_every=1", "train.final_metric_window=1", "train.checkpoint_every=0", "train.batch_size=8"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CONVERGE)
def test_converge_preset_runs_end_to_end_in_seconds(recipe, tmp_path):
    from patchbench.studies.study import run_study

    out = tmp_path / recipe
    report = run_study(str(RECIPES / f"{recipe}.yaml"), "converge", SMOKE[recipe] + FAST, out)
    md = report.read_text()
    assert md.splitlines()[2] == "## Verdicts" and "single run, not a verdict" in md
    assert "## Compute-matched" in md and "## Fairness" in md and "## Claims" in md
    assert (out / "curves.csv").is_file() and list(out.glob("runs/*/flops.json"))
