"""PEFT ablation on the model organism (*The Path Not Taken*'s table; issue 17, item 1).

Fine-tunes an organism's ``base/`` with each method -- full, LoRA at ranks scaled to the
organism's width, sparse top-|W0| masks -- by SFT (the organism's own SFT stage settings) or
by true-reward GRPO (its RL settings), and scores greedy accuracy on the held-out clean eval
split (``eval_clean``) and on the first ``rl_eval_size`` training problems (``rl_train``).

    python benchmarks/peft_ablation.py --organism runs/organism-cpu-small-seed0 --stage sft \
        --out benchmarks/results/peft_ablation_sft.json

The results JSON holds one row per method with the accuracies, the change against full
fine-tuning (percentage points) and wall time. Run with 1 thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

METHODS = {
    "full": dict(method="full"),
    # the paper's r = 16 / 64 on Qwen2.5-Math-7B (hidden 3584) are 0.45 % / 1.8 % of the width;
    # on the organism's hidden 128 that is r = 1 / 2 (rounded up to at least 1)
    "lora-r1": dict(method="lora", rank=1),
    "lora-r2": dict(method="lora", rank=2),
    "pissa-r2": dict(method="pissa", rank=2),
    "sparse-10": dict(method="sparse", sparse_fraction=0.10),
    "sparse-30": dict(method="sparse", sparse_fraction=0.30),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", required=True)
    parser.add_argument("--stage", choices=("sft", "grpo"), required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    from rlvr_lens.data import read_samples
    from rlvr_lens.data.templates import apply_template
    from rlvr_lens.generation import accuracy
    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.pretrain import TrainSettings, train_causal_lm
    from rlvr_lens.train.grpo import GRPOSettings, train_grpo
    from rlvr_lens.train.peft_methods import AdapterConfig

    torch.set_num_threads(1)
    root = Path(args.organism)
    manifest = json.loads((root / "manifest.json").read_text())
    cfg = manifest["config"]
    rl_train = read_samples(root / "data" / "rl_train.jsonl")
    evaluation = read_samples(root / "data" / "eval.jsonl")
    sets = {
        "eval_clean": [s for s in evaluation if not s.labels.get("leaked")],
        "rl_train": rl_train[: cfg["rl_eval_size"]],
    }

    def score(model, tokenizer) -> dict[str, float]:
        return {
            name: accuracy(model, tokenizer, samples, template="organism",
                           max_new_tokens=cfg["eval_max_new_tokens"], batch_size=cfg["eval_batch_size"])[0]
            for name, samples in sets.items()
        }

    out_path = Path(args.out)
    rows = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
    done = {r["method"] for r in rows}
    for name in args.methods.split(","):
        if name in done:
            continue
        adapter = AdapterConfig(**METHODS[name])
        start = time.perf_counter()
        if args.stage == "sft":
            loaded = load_model(str(root / "base"), dtype="float32", device="cpu")
            settings = TrainSettings(**{**cfg["sft"], "seed": manifest["seed"]})
            train_causal_lm(loaded.model, loaded.tokenizer,
                            [(apply_template(s.prompt, "organism"), s.solution or "") for s in rl_train],
                            settings, adapter=adapter)
            model, tokenizer = loaded.model, loaded.tokenizer
        else:
            settings = dataclasses.replace(GRPOSettings.from_dict(cfg["rl"]), reward="correct", seed=manifest["seed"],
                                           save_steps=0, eval_steps=0, adapter=adapter)
            with tempfile.TemporaryDirectory() as tmp:
                run = train_grpo(root / "base", rl_train, tmp, settings)
                loaded = load_model(run.final_dir, dtype="float32", device="cpu")
            model, tokenizer = loaded.model, loaded.tokenizer
        train_s = time.perf_counter() - start
        row = {"method": name, "adapter": adapter.to_dict(), **score(model, tokenizer),
               "train_wall_s": round(train_s, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        full = next((r for r in rows if r["method"] == "full"), None)
        for r in rows:
            if full is not None:
                r["delta_vs_full_pp"] = {k: round(100 * (r[k] - full[k]), 1) for k in sets}
        payload = {"organism": str(root), "seed": manifest["seed"], "stage": args.stage,
                   "settings": cfg["sft"] if args.stage == "sft" else cfg["rl"],
                   "threads": 1, "load_avg_1m": os.getloadavg()[0], "rows": rows}
        tmp_out = out_path.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(payload, indent=1))
        os.replace(tmp_out, out_path)


if __name__ == "__main__":
    main()
