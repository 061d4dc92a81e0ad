"""``rlvr-lens steer``: causal interventions on a base/tuned pair: reset/retain layer windows and
neuron key scaling.

Writes ``OUT/ablation.json``, ``OUT/steering.json``, their figures and ``OUT/report.html``
(each atomically, at the end).
"""

from __future__ import annotations

import argparse

from rlvr_lens.cli.common import add_data_args, add_model_args, add_runtime_args
from rlvr_lens.errors import UserError


def _list(text: str, cast, option: str) -> tuple:
    try:
        return tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"Cannot read {option} {text!r}; give comma-separated values.") from None


def _windows(text: str) -> tuple[tuple[int, int], ...]:
    """``"2-3,5-7"`` -> ``((2, 3), (5, 7))``."""
    windows = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            a, _, b = part.partition("-")
            windows.append((int(a), int(b or a)))
        except ValueError:
            raise UserError(f"Cannot read window {part!r}; write windows as A-B (inclusive layers), e.g. 2-3,5-7.") from None
    return tuple(windows)


def register(subparsers) -> None:
    from rlvr_lens.cli.defaults import dataclass_defaults, module_constant

    # defaults read from the sources: --help must not import torch
    a = dataclass_defaults("rlvr_lens.analyses.ablation", "AblationConfig")
    s = dataclass_defaults("rlvr_lens.analyses.steering", "SteeringConfig")
    PARTS, MODES = module_constant("rlvr_lens.analyses.ablation", "PARTS"), module_constant("rlvr_lens.analyses.ablation", "MODES")
    SELECTIONS = module_constant("rlvr_lens.analyses.steering", "SELECTIONS")
    SCOPES = module_constant("rlvr_lens.analyses.steering", "SCOPES")
    parser = subparsers.add_parser(
        "steer",
        help="reset/retain layer windows and scale MLP neurons: which parts of the tuning carry the gain",
        description="Greedy accuracy per sample group (leakage, stable, leaked, clean) of the tuned model with layer "
        "windows reset to the base, the base with windows retained from the tuned model, a matched-noise control, "
        "and the tuned model with chosen MLP neuron activations scaled by alpha (with a random-neuron control).",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser, batch_size=a.batch_size)
    parser.add_argument("--groups", default=None, metavar="FILE", help="JSON {group: [indices]} or an evaluation result (default: greedy-decode both models)")
    parser.add_argument("--only-groups", default="", help="decode only the samples of these groups, e.g. leakage,stable,clean (default: all samples)")
    parser.add_argument("--per-group", type=int, default=None, help="with --only-groups: at most this many samples of each group (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=a.max_new_tokens, help=f"greedy decoding budget (default: {a.max_new_tokens})")
    parser.add_argument("--seed", type=int, default=a.seed, help="seed of the noise, the control and the calibration split (default: 0)")
    parser.add_argument("--no-ablation", action="store_true", help="skip reset/retain")
    parser.add_argument("--width", type=int, default=a.width, help=f"sliding window width in layers; 0 = only --windows (default: {a.width})")
    parser.add_argument("--windows", default="", help="extra windows A-B, e.g. the circuits analysis' anchor and adapter: 2-3,5-6")
    parser.add_argument("--parts", default=",".join(PARTS), help="mlp, attn, both (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="reset, retain, noise (default: %(default)s)")
    parser.add_argument("--no-steering", action="store_true", help="skip neuron key scaling")
    parser.add_argument("--layers", default="", help="layers to steer, e.g. 2,3 (default: all)")
    parser.add_argument("--alphas", default=",".join(f"{x:g}" for x in module_constant("rlvr_lens.analyses.steering", "DEFAULT_ALPHAS")), help="scaling factors (default: %(default)s)")
    parser.add_argument("--selections", default=",".join(SELECTIONS), help="neuron selection rules (default: %(default)s)")
    parser.add_argument("--scopes", default=",".join(SCOPES), help="per_sample, shared (default: %(default)s)")
    parser.add_argument("--top-n", type=int, default=s.top_n, help=f"neurons scaled (default: {s.top_n})")
    parser.add_argument("--calibration-group", default=s.calibration_group, help=f"group whose held-out part chooses the shared set (default: {s.calibration_group})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.ablation import AblationConfig, reset_retain
    from rlvr_lens.analyses.steering import SteeringConfig, neuron_steering
    from rlvr_lens.cli.common import check_out_dir, load_data, load_series
    from rlvr_lens.cli.groups import greedy_groups, read_groups, restrict
    from rlvr_lens.models import free_model
    from rlvr_lens.report import write_run

    series = load_series(args)
    if len(series.specs) != 2:
        raise UserError("Give exactly two --model checkpoints: the base, then the tuned one.")
    ablation = AblationConfig(
        width=args.width, windows=_windows(args.windows), parts=_list(args.parts, str, "--parts"),
        modes=_list(args.modes, str, "--modes"), template=args.template, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, seed=args.seed,
    )
    steering = SteeringConfig(
        layers=_list(args.layers, int, "--layers") or None, alphas=_list(args.alphas, float, "--alphas"),
        selections=_list(args.selections, str, "--selections"), scopes=_list(args.scopes, str, "--scopes"),
        top_n=args.top_n, calibration_group=args.calibration_group, template=args.template,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
    )
    if not args.no_ablation:
        ablation.check()
    if not args.no_steering:
        steering.check()
    samples = load_data(args)
    out = check_out_dir(args.out)
    base = tuned = None
    results = []
    try:
        base, tuned = series.load(0), series.load(1)
        if args.groups:
            groups = read_groups(args.groups, len(samples), base=base.name, tuned=tuned.name)
        else:
            groups, _ = greedy_groups(base, tuned, samples, template=args.template, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        keep = [g for g in args.only_groups.split(",") if g.strip()]
        if keep:
            samples, groups = restrict(samples, groups, keep, args.per_group)
            groups = {g: idx for g, idx in groups.items() if idx}
        if not args.no_ablation:
            results.append(reset_retain(base, tuned, samples, groups, ablation, show_progress=not args.no_progress))
        if not args.no_steering:
            results.append(neuron_steering(tuned, samples, groups, steering, show_progress=not args.no_progress))
    finally:
        free_model(base), free_model(tuned)
    if not results:
        raise UserError("Nothing to do: both --no-ablation and --no-steering were given.")
    context = [
        f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in series.specs)}",
        f"data: {args.data} ({len(samples)} samples decoded); groups: " + ", ".join(f"{g} {len(i)}" for g, i in groups.items()),
    ]
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    report = write_run(out, results, title="rlvr-lens: interventions", context=context)
    print(f"wrote {', '.join(str(out / (r.kind + '.json')) for r in results)} and {report}")
    return 0
