"""Hand-made wrong variants ("mutants") of the functions issue 16 listed, each run against the
tests meant to catch it. A mutant that no test kills is a check that cannot fail.

Run on demand, not in CI (a few minutes, one thread):

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python tests/mutants.py [NAME ...]

Each mutant replaces one exact snippet of one source file (the snippet must occur exactly
once), runs ``pytest -x`` on the named tests, and restores the file whatever happens. It prints
one line per mutant (``killed`` / ``SURVIVED``) and exits 1 if any survived. Results and the
command are recorded in tests/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]  # pytest node ids or "file::-k expression"


TOKENS = "tests/test_tokens.py"
MUTANTS = [
    # --- GRPOSettings on TRL's names (issue 16, last item)
    Mutant("grpo-config-drops-trl-fields", "src/rlvr_lens/train/grpo.py",
           "        **{name: getattr(settings, name) for name in TRL_FIELDS},\n",
           "        **{name: getattr(settings, name) for name in TRL_FIELDS if name != \"beta\"},\n",
           ("tests/test_grpo_settings.py -k trl_named_fields",)),
    Mutant("bool-switch-inverted", "src/rlvr_lens/cli/dataclass_args.py",
           'action="store_false", default=True', 'action="store_true", default=True',
           ("tests/test_grpo_settings.py -k round_trip",)),
    Mutant("old-name-not-upgraded", "src/rlvr_lens/train/settings.py",
           '    "eval_every": "eval_steps",\n', "",
           ("tests/test_grpo_settings.py -k old",)),
    # --- hooks and adapters: patching a different value
    Mutant("patch-output-hook-ignored", "src/rlvr_lens/models/hooks.py",
           "return _with_first(out, replaced(_first(out), replacement))", "return out",
           ("tests/test_models.py -k scaled_value",)),
    Mutant("patch-pre-hook-ignored", "src/rlvr_lens/models/hooks.py",
           "return (replaced(args[0], replacement), *args[1:])", "return None",
           ("tests/test_models.py -k scaled_value",)),
    Mutant("sandwich-attn_out-is-o_proj", "src/rlvr_lens/models/adapters.py",
           '_SANDWICH = dict(attn_out_module="post_attention_layernorm"', '_SANDWICH = dict(attn_out_module="self_attn.o_proj"',
           ("tests/test_models.py -k scaled_value",)),
    Mutant("sandwich-mlp_out-is-mlp", "src/rlvr_lens/models/adapters.py",
           'mlp_out_module="post_feedforward_layernorm")', 'mlp_out_module="mlp")',
           ("tests/test_models.py -k scaled_value",)),
    Mutant("gate-hooks-up_proj", "src/rlvr_lens/models/adapters.py",
           'gate_module: str = "mlp.gate_proj"', 'gate_module: str = "mlp.up_proj"',
           ("tests/test_models.py -k scaled_value",)),
    Mutant("resid_post-hooks-attention", "src/rlvr_lens/models/adapters.py",
           'return self.layers(model)[layer], "output"', 'return self.layer_module(model, layer, "self_attn"), "output"',
           ("tests/test_models.py -k resid_post_from_another",)),
    # --- token metrics, cross-decoding, summaries
    Mutant("jsd-without-one-half", "src/rlvr_lens/analyses/token_metrics.py",
           "    return (0.5 * terms.sum(-1)).clamp_min(0.0)\n\n\ndef jsd_from_logits",
           "    return (terms.sum(-1)).clamp_min(0.0)\n\n\ndef jsd_from_logits",
           (f"{TOKENS} -k jsd_from_logits",)),
    Mutant("cross-changed-is-taken", "src/rlvr_lens/analyses/cross_decode.py",
           "(tokens != driver_top).tolist()", "take_other.tolist()",
           (f"{TOKENS} -k cross_decode_limits",)),
    Mutant("position-share-threshold", "src/rlvr_lens/analyses/tokens.py",
           "position_share.append(float((in_bin > 0.1).mean())", "position_share.append(float((in_bin > 0.01).mean())",
           (f"{TOKENS} -k independent_recount",)),
    Mutant("group-accuracy-over-all", "src/rlvr_lens/analyses/tokens.py",
           "accuracy=float(np.mean([correct[i] for i in indices])),", "accuracy=float(np.mean(correct)),",
           (f"{TOKENS} -k independent_recount",)),
    Mutant("auroc-reversed", "src/rlvr_lens/analyses/tokens.py",
           "scoring_auroc([s.mean_jsd for s in per_sample], labels)", "scoring_auroc([-s.mean_jsd for s in per_sample], labels)",
           (f"{TOKENS} -k independent_recount",)),
    Mutant("cross-accuracy-first-only", "src/rlvr_lens/analyses/tokens.py",
           "accuracy=float(np.mean(correct)),\n        share_replaced", "accuracy=float(np.mean(correct[:1])),\n        share_replaced",
           (f"{TOKENS} -k hand_count",)),
    Mutant("report-kl-columns-swapped", "src/rlvr_lens/analyses/tokens_report.py",
           '_fmt(m.get("kl_base_tuned")),', '_fmt(m.get("kl_tuned_base")),',
           (f"{TOKENS} -k independent_recount",)),
    # --- probe and perplexity
    Mutant("kept-tokens-floor", "src/rlvr_lens/analyses/contamination.py",
           "max(1, round(fraction * n))", "max(1, int(fraction * n))",
           ("tests/test_contamination.py -k memorized",)),
    Mutant("probe-no-context-clamp", "src/rlvr_lens/analyses/contamination.py",
           "min(max_new, context - max(len(x) for x in inputs))", "min(max_new, context)",
           ("tests/test_contamination.py -k clamps",)),
    Mutant("probe-report-answer-rates-swapped", "src/rlvr_lens/analyses/contamination.py",
           'f"{_fmt(b.answer_rate)}."', 'f"{_fmt(a.answer_rate)}."',
           ("tests/test_contamination.py -k report_section",)),
    Mutant("prompt-rise-reversed", "src/rlvr_lens/analyses/perplexity.py",
           '_diff(ckpt.prompt_nll, base.prompt_nll)', '_diff(base.prompt_nll, ckpt.prompt_nll)',
           ("tests/test_perplexity.py -k memorized",)),
    Mutant("perplexity-report-columns-swapped", "src/rlvr_lens/analyses/perplexity.py",
           "row = [ckpt.name, ckpt.dtype, _fmt(ckpt.prompt_ppl), _fmt(ckpt.answer_ppl)]",
           "row = [ckpt.name, ckpt.dtype, _fmt(ckpt.answer_ppl), _fmt(ckpt.prompt_ppl)]",
           ("tests/test_perplexity.py -k memorized",)),
    # --- organism pretraining
    Mutant("warmup-off-by-one", "src/rlvr_lens/organism/pretrain.py",
           "settings.learning_rate * (step + 1) / settings.warmup_steps", "settings.learning_rate * step / settings.warmup_steps",
           ("tests/test_organism.py -k learning_rate",)),
    Mutant("sft-loss-on-prompt", "src/rlvr_lens/organism/pretrain.py",
           'start = prompt_len if loss_on == "completion" else 0', "start = 0",
           ("tests/test_organism.py -k completion_only",)),
    Mutant("truncation-drops-one-more", "src/rlvr_lens/organism/pretrain.py",
           "[tokenizer.eos_token_id])[:max_length]", "[tokenizer.eos_token_id])[: max_length - 1]",
           ("tests/test_organism.py -k truncated",)),
    # --- weights
    Mutant("aggregated-gate-mean-of-ratios", "src/rlvr_lens/analyses/weights.py",
           "return sum(r.precision_gate * (1 - r.sparsity) * r.n_params for r in gated) / changed",
           "return float(np.mean([r.precision_gate for r in gated]))",
           ("tests/test_weights.py -k precision_gate",)),
    Mutant("aggregate-right-angle-is-left", "src/rlvr_lens/analyses/weights.py",
           "angle_right_max_deg=_mean(s.angle_right_max_deg for s in first)", "angle_right_max_deg=_mean(s.angle_left_max_deg for s in first)",
           ("tests/test_weights.py -k random_update",)),
    Mutant("right-angle-mean-is-max", "src/rlvr_lens/analyses/weights.py",
           "angle_right_mean_deg=float(a_right.mean())", "angle_right_mean_deg=float(a_right.max())",
           ("tests/test_weights.py -k random_update",)),
    Mutant("include-anchored", "src/rlvr_lens/analyses/weights.py",
           "names = [n for n in names if re.search(config.include, n)]", "names = [n for n in names if re.match(config.include, n)]",
           ("tests/test_weights.py -k spectrum_detail",)),
    Mutant("spectrum-right-energy-unnormalized", "src/rlvr_lens/analyses/weights.py",
           "right_energy=(right_energy[i] / total if total > 0 else right_energy[i])", "right_energy=right_energy[i]",
           ("tests/test_weights.py -k spectrum_detail",)),
    Mutant("weights-report-angles-swapped", "src/rlvr_lens/analyses/weights_report.py",
           "_fmt(a.angle_left_max_deg),\n                _fmt(a.angle_right_max_deg),",
           "_fmt(a.angle_right_max_deg),\n                _fmt(a.angle_left_max_deg),",
           ("tests/test_weights.py -k random_update",)),
    # --- GRPO
    Mutant("true-reward-trains", "src/rlvr_lens/train/grpo.py",
           "args.reward_weights = [1.0, 0.0]", "args.reward_weights = [1.0, 1.0]",
           ("tests/test_grpo.py -k monitor",)),
    Mutant("random-reward-complemented", "src/rlvr_lens/train/rewards.py",
           "(self._rng.random(len(completions)) < self.p)", "(self._rng.random(len(completions)) >= self.p)",
           ("tests/test_grpo.py -k seeded_random",)),
    Mutant("divergence-weights-uncapped", "src/rlvr_lens/train/divergence.py",
           "u = 1.0 + torch.clamp(divergence / (mean_d + 1e-8), max=cap)", "u = 1.0 + divergence / (mean_d + 1e-8)",
           ("tests/test_grpo.py -k divergence_weights_by_hand or divergence_weighted",)),
    Mutant("grpo-report-first-is-last", "src/rlvr_lens/train/report.py",
           "true reward went from {_fmt(first_acc)}", "true reward went from {_fmt(last_acc)}",
           ("tests/test_grpo.py -k hand_made_run",)),
    # --- test infrastructure
    Mutant("ci-missing-data-skips", "tests/conftest.py",
           'if os.environ.get("CI"):', "if False:",
           ("tests/test_conftest_data.py",)),
    # --- sharding over launcher processes: results gathered in arrival order, not batch order
    Mutant("sharded-batches-in-arrival-order", "src/rlvr_lens/distributed.py",
           "for _, part in sorted(gather_dict(mine).items())", "for _, part in gather_dict(mine).items()",
           ("tests/test_distributed_more.py -k circuits",)),
    Mutant("sharded-tensors-in-arrival-order", "src/rlvr_lens/analyses/weights.py",
           "in sorted(gather_dict(mine).items()):", "in gather_dict(mine).items():",
           ("tests/test_distributed_more.py -k weights",)),
]


def run(mutant: Mutant) -> tuple[bool, float]:
    path = ROOT / mutant.path
    source = path.read_text()
    assert source.count(mutant.original) == 1, f"{mutant.name}: snippet found {source.count(mutant.original)} times"
    start = time.perf_counter()
    try:
        path.write_text(source.replace(mutant.original, mutant.mutated))
        killed = False
        for spec in mutant.tests:
            args = spec.split(" -k ")
            command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", args[0]]
            if len(args) == 2:
                command += ["-k", args[1]]
            if subprocess.run(command, cwd=ROOT, capture_output=True, env=os.environ).returncode != 0:
                killed = True
                break
    finally:
        path.write_text(source)
    return killed, time.perf_counter() - start


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    survivors = []
    for mutant in chosen:
        killed, seconds = run(mutant)
        print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.name:40s} {mutant.path} ({seconds:.0f} s)", flush=True)
        if not killed:
            survivors.append(mutant.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants killed; survivors: {', '.join(survivors) or 'none'}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
