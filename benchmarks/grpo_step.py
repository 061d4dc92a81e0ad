"""Seconds per GRPO optimizer step on a small random qwen2 model (CPU, or the GPU when present).

    python benchmarks/grpo_step.py [--hidden 128 --layers 4 --steps 4 --prompts 8 --group 8 --tokens 32]

Writes benchmarks/results/grpo_step.json. Reported: the run's wall time (model load and the
final save included) and that time divided by the number of steps. The load average is recorded because the
development machines are shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.io import atomic_write_json
from rlvr_lens.models.tiny import build_tokenizer, save_tiny_checkpoint
from rlvr_lens.train.grpo import GRPOSettings, train_grpo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--divergence-weighting", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "grpo_step.json"))
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    samples = [Sample(str(i), f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(32)]
    with tempfile.TemporaryDirectory() as tmp:
        start = save_tiny_checkpoint(
            Path(tmp) / "start",
            "qwen2",
            tokenizer=tokenizer,
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
        )
        settings = GRPOSettings(
            reward="random",
            max_steps=args.steps,
            prompts_per_step=args.prompts,
            num_generations=args.group,
            max_completion_length=args.tokens,
            divergence_weighting=args.divergence_weighting,
            save_steps=0,
            eval_steps=0,
        )
        run = train_grpo(start, samples, Path(tmp) / "run", settings)
    # Whole-run wall time (model load, trainer set-up and the final save included) over the steps.
    per_step = run.wall_time_s / args.steps
    result = {
        "benchmark": "grpo_step",
        "device": "cuda:" + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "model": {"family": "qwen2", "hidden": args.hidden, "layers": args.layers, "vocab": len(tokenizer)},
        "settings": {
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": args.tokens,
            "steps": args.steps,
            "divergence_weighting": args.divergence_weighting,
        },
        "wall_time_s": round(run.wall_time_s, 2),
        "seconds_per_step_including_load_and_save": round(per_step, 2),
        "completion_length_mean": sum(r.get("completion_length") or 0 for r in run.steps)
        / max(1, len(run.steps)),
    }
    atomic_write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
