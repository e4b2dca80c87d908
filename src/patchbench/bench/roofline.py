"""`patchbench bench MODEL --profile`: a roofline account of one training step, stage by stage.

The step is cut into the model's stages (PACING: embedding + placement, stem, each ConvNeXt stage, readout
+ head, loss; GPT-2: embedding, each block, ln_f + head, loss) and the AdamW step. Each stage runs as its
own autograd graph (its input detached), so its forward and backward can be counted and timed alone:

    FLOPs       engine.flops (the bench's counter), forward and backward
    bytes       what the stage's operators read and write (every tensor argument and result once; views
                move nothing): the traffic if no operator found its data in cache, an upper bound
    time        torch.profiler, one record_function range per stage and direction, median over steps
    bound       max(FLOPs / peak FLOP/s, bytes / bandwidth): the roofline's lower bound on the time
    top ops     the operators with the most self time inside the stage (profiler)

Peak FLOP/s is the bench's CPU probe (or the GPU table); bandwidth is a measured large copy. The
stages compute exactly the model's function (the same methods the model's forward calls).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from patchbench.engine.flops import count_flops

Stage = tuple[str, Callable[[Any], Any]]


# --------------------------------------------------------------------------------------------------
# stages: the model's forward cut into pieces that run one after another


def pacing_stages(model: nn.Module) -> list[Stage]:
    own = model.cfg.forward_impl == "patchbench"
    nhwc = model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    if own:
        stages: list[Stage] = [
            ("embed + placement", lambda ids: model.to_image(model.embed(ids), channels_last=True).permute(0, 2, 3, 1)),
            ("stem", lambda x: model._norm(model._conv(x, model.stem[0]), model.stem[1])),
        ]
        for i, st in enumerate(model.stages):
            def run(x, st=st):
                if not isinstance(st.downsample, nn.Identity):
                    x = model._conv(model._norm(x, st.downsample[0]), st.downsample[1])
                for blk in st.blocks:
                    x = model._block(x, blk)
                return x
            stages.append((f"stage {i + 1} ({len(st.blocks)} blocks)", run))
        stages.append(("readout + head", lambda x: model.forward_head(x.permute(0, 3, 1, 2))))
        return stages
    stages = [("embed + placement", lambda ids: model.to_image(model.embed(ids), channels_last=nhwc)),
              ("stem", model.stem)]
    stages += [(f"stage {i + 1} ({len(st.blocks)} blocks)", st) for i, st in enumerate(model.stages)]
    stages.append(("readout + head", model.forward_head))
    return stages


def gpt2_stages(model: nn.Module) -> list[Stage]:
    if not model.own_forward:
        raise ValueError("--profile cuts patchbench's GPT-2 forward; set gpt2.forward_impl=patchbench")
    body = model.lm.transformer
    p = model.dropout

    def embed(ids):
        x = body.wte(ids) + body.wpe(torch.arange(ids.shape[1], device=ids.device))
        return F.dropout(x, p if model.training else 0.0, model.training)

    n = len(body.h)
    stages: list[Stage] = [("embed", embed)]
    stages += [(f"block {i + 1}" + (" (last position)" if i == n - 1 else ""),
                lambda x, blk=blk, last=i == n - 1: model._block(blk, x, last)) for i, blk in enumerate(body.h)]
    stages.append(("ln_f + head", lambda x: model.forward_head(
        F.layer_norm(x[:, -1], (x.shape[-1],), body.ln_f.weight, body.ln_f.bias, model.eps))))
    return stages


def model_stages(name: str, model: nn.Module) -> list[Stage]:
    kind = type(model).__name__
    if kind == "Pacing":
        return pacing_stages(model)
    if kind == "GPT2":
        return gpt2_stages(model)
    raise ValueError(f"--profile knows the stages of pacing and gpt2, not {name!r}")


# --------------------------------------------------------------------------------------------------
# bytes moved


class ByteCounter(TorchDispatchMode):
    """Bytes each operator reads and writes: every tensor argument and every result once; a result that
    aliases an argument (views, in-place) is not counted again."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.returns and all(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            return out  # a view: nothing moves
        ins = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)]
        seen = {t.untyped_storage().data_ptr() for t in ins}
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen]
        self.bytes += sum(t.numel() * t.element_size() for t in ins + outs)
        return out


def count_bytes(fn: Callable[[], Any]) -> int:
    with ByteCounter() as c:
        fn()
    return c.bytes


def copy_bandwidth(mib: int = 64, seconds: float = 0.5) -> float:
    """Bytes/s of the best large copy (read + write), on CPU."""
    a = torch.empty(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        b.copy_(a)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * a.numel() * 4 / best


# --------------------------------------------------------------------------------------------------
# the account


def _detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().requires_grad_(True)
    return x


def profile_step(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, peak: float, bandwidth: float,
                 steps: int = 5, optimizer: torch.optim.Optimizer | None = None) -> list[dict[str, Any]]:
    """One row per stage and direction (plus the loss and the optimizer step): FLOPs, bytes, median time,
    roofline bound and the top operators. The stages' outputs equal the model's forward."""
    from torch.profiler import ProfilerActivity, profile, record_function

    model.train()
    stages = model_stages(name, model) + [("loss", lambda logits: F.cross_entropy(logits.float(), y))]
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-4)

    def one_step(counting: dict | None = None) -> None:
        inputs, outputs = [], []
        h: Any = x
        for label, fn in stages:  # forward, stage by stage
            h_in = _detached(h)
            with record_function(f"{label} | forward"):
                if counting is None:
                    h = fn(h_in)
                else:
                    box = {}
                    counting[label]["forward flops"] = count_flops(lambda fn=fn, h_in=h_in, box=box: box.setdefault("o", fn(h_in)))
                    h = box["o"]
                    counting[label]["forward bytes"] = count_bytes(lambda fn=fn, h_in=h_in: fn(h_in))
            inputs.append(h_in)
            outputs.append(h)
        grad = None
        for (label, _), h_in, h_out in zip(reversed(stages), reversed(inputs), reversed(outputs), strict=True):
            def back(h_out=h_out, grad=grad) -> None:
                torch.autograd.backward(h_out, grad, retain_graph=counting is not None)
            with record_function(f"{label} | backward"):
                if counting is None:
                    back()
                else:
                    counting[label]["backward flops"] = count_flops(back)
                    counting[label]["backward bytes"] = count_bytes(back)
            grad = h_in.grad if isinstance(h_in, torch.Tensor) and h_in.requires_grad else None
        with record_function("AdamW step | update"):
            if counting is None:
                opt.step()
            else:
                counting["AdamW step"]["update bytes"] = count_bytes(opt.step)
        opt.zero_grad(set_to_none=True)

    counts: dict[str, dict[str, int]] = defaultdict(dict)
    one_step(counts)  # counting pass (the bytes pass re-runs each forward once, untimed)
    for _ in range(2):
        one_step()  # warm-up
    times: dict[str, list[float]] = defaultdict(list)
    tops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one_step()
    ranges = [e for e in prof.events() if " | " in e.name]
    for e in ranges:
        times[e.name].append(e.cpu_time_total / 1e6)
    for e in prof.events():  # self time of operators, attributed to the stage range that holds them
        parent = e.cpu_parent
        while parent is not None and " | " not in parent.name:
            parent = parent.cpu_parent
        if parent is not None and e.name.startswith("aten::"):
            tops[parent.name][e.name] += e.self_cpu_time_total / 1e6 / steps

    rows = []
    passes = [(s, "forward") for s, _ in stages] + [(s, "backward") for s, _ in reversed(stages)] + [("AdamW step", "update")]
    for label, direction in passes:
        key = f"{label} | {direction}"
        flops = counts[label].get(f"{direction} flops", 0)
        nbytes = counts[label].get(f"{direction} bytes", 0)
        t = statistics.median(times[key]) if times[key] else 0.0
        bound = max(flops / peak if peak else 0.0, nbytes / bandwidth)
        top = sorted(tops[key].items(), key=lambda kv: -kv[1])[:3]
        rows.append({"stage": label, "direction": direction, "flops": flops, "bytes": nbytes, "time_s": t,
                     "intensity": flops / nbytes if nbytes else 0.0, "bound_s": bound,
                     "gflops_per_s": flops / t / 1e9 if t else 0.0, "of_bound": bound / t if t else 0.0,
                     "top_ops": [(n.removeprefix("aten::"), s) for n, s in top]})
    return rows


def profile_table(rows: list[dict[str, Any]], peak: float, bandwidth: float, batch: int) -> str:
    total = sum(r["time_s"] for r in rows)
    lines = [f"Peak {peak / 1e9:.0f} GFLOP/s, copy bandwidth {bandwidth / 1e9:.1f} GB/s (ridge {peak / bandwidth:.1f} FLOP/byte); "
             f"batch {batch}; step {total * 1e3:.1f} ms as the sum of the stages ({batch / total:.1f} samples/s).", "",
             "| stage | pass | MFLOP | MB moved | FLOP/byte | time ms | share | GFLOP/s | roofline bound ms | bound ÷ time "
             "| top operators (self ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        top = ", ".join(f"{n} {s * 1e3:.1f}" for n, s in r["top_ops"])
        lines.append(f"| {r['stage']} | {r['direction']} | {r['flops'] / 1e6:,.1f} | {r['bytes'] / 1e6:,.1f} | {r['intensity']:.1f} | "
                     f"{r['time_s'] * 1e3:.2f} | {100 * r['time_s'] / total:.0f}% | {r['gflops_per_s']:.1f} | "
                     f"{r['bound_s'] * 1e3:.2f} | {100 * r['of_bound']:.0f}% | {top} |")
    return "\n".join(lines) + "\n"
