"""``rlvr-lens scoreboard``: every per-sample signal and the published detectors, scored on ground truth.

Writes ``OUT/scoreboard.json``, ``OUT/detectors.json``, the figure and ``OUT/report.html``
(each atomically, at the end).
"""

from __future__ import annotations

import argparse
import sys

from rlvr_lens.cli.common import add_data_args, add_model_args, add_runtime_args
from rlvr_lens.errors import UserError


def register(subparsers) -> None:
    from rlvr_lens.cli.defaults import dataclass_defaults

    c = dataclass_defaults("rlvr_lens.analyses.scoreboard", "ScoreboardConfig")  # no torch import for --help
    parser = subparsers.add_parser(
        "scoreboard",
        help="score every per-sample signal and the published contamination detectors against ground truth",
        description="Compute the published membership-inference detectors (loss, zlib, Min-K%%, Min-K%%++, "
        "reference ratio) and the perplexity signals for a base and a tuned checkpoint, add the signals of "
        "earlier results (--results), and score each as a detector: AUROC with a bootstrap interval, TPR at "
        "5%% FPR, and the false alarms of its calibrated verdict on a zero-leak organism (--zero-leak-model).",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser)
    parser.add_argument("--results", action="append", default=[], metavar="FILE", help="a saved result JSON whose per-sample signals are scored too (repeatable)")
    parser.add_argument("--groups", default=None, metavar="FILE", help="JSON {group: [indices]} or an evaluation result (default: greedy-decode both models)")
    parser.add_argument("--zero-leak-model", dest="zero_leak_models", action="append", default=[], metavar="NAME=PATH", help="base then tuned checkpoint of an organism built with zero leaks (give both)")
    parser.add_argument("--zero-leak-data", default=None, metavar="FILE", help="its samples (default: --data)")
    parser.add_argument("--zero-leak-results", action="append", default=[], metavar="FILE", help="its saved results, for the same signals (repeatable)")
    parser.add_argument("--calibration-fraction", type=float, default=c.calibration_fraction, help=f"share of each group used to choose k, direction and threshold (default: {c.calibration_fraction})")
    parser.add_argument("--n-boot", type=int, default=c.n_boot, help=f"bootstrap replicates (default: {c.n_boot})")
    parser.add_argument("--seed", type=int, default=c.seed, help=f"seed of the split and the bootstrap (default: {c.seed})")
    parser.add_argument("--detector-text", default="full", help="tokens the detectors score: full, prompt or answer (default: full)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="greedy decoding budget for the groups (default: 256)")
    parser.set_defaults(func=run)


def _load_results(paths):
    import json
    from pathlib import Path

    from rlvr_lens.report.registry import _load_analysis_modules
    from rlvr_lens.results import Result

    _load_analysis_modules()
    kinds = {cls.kind: cls for cls in _subclasses(Result)}
    out = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"Cannot read result {path}: {error}.") from None
        cls = kinds.get(data.get("kind"))
        if cls is None:
            raise UserError(f"{path} is not a result this version knows (kind {data.get('kind')!r}).")
        out.append(cls.from_dict(data))
    return out


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.detectors import DetectorsConfig
    from rlvr_lens.analyses.scoreboard import ScoreboardConfig, collect_signals, measure_signals, scoreboard
    from rlvr_lens.cli.common import check_out_dir, load_data, parse_models
    from rlvr_lens.cli.groups import greedy_groups, read_groups
    from rlvr_lens.data import read_samples_report
    from rlvr_lens.models import free_model, load_model
    from rlvr_lens.models.compat import check_compatible
    from rlvr_lens.report import write_run

    specs = parse_models(args.models, 2)
    if len(specs) != 2:
        raise UserError("Give exactly two --model checkpoints: the base, then the tuned one.")
    zero_specs = parse_models(args.zero_leak_models, 2) if args.zero_leak_models else None
    if zero_specs is not None and len(zero_specs) != 2:
        raise UserError("Give exactly two --zero-leak-model checkpoints: its base, then its tuned one.")
    scoreboard_config = ScoreboardConfig(calibration_fraction=args.calibration_fraction, n_boot=args.n_boot, seed=args.seed)
    scoreboard_config.check()
    detectors_config = DetectorsConfig(template=args.template, text=args.detector_text, batch_size=args.batch_size)
    detectors_config.check()
    samples = load_data(args)
    check_compatible([s.source for s in specs], names=[s.name for s in specs])
    prior = _load_results(args.results)
    zero_prior = _load_results(args.zero_leak_results)
    out = check_out_dir(args.out)

    def pair_signals(pair, data, results):
        base = tuned = None
        try:
            base = load_model(pair[0].source, args.dtype, args.device, name=pair[0].name)
            tuned = load_model(pair[1].source, args.dtype, args.device, name=pair[1].name)
            signals, detectors = measure_signals(base, tuned, data, detectors_config, show_progress=not args.no_progress)
            signals.update(collect_signals(results, [s.id for s in data], tuned=tuned.name, strict=True))
            groups = accuracies = None
            if data is samples:
                if args.groups:
                    groups = read_groups(args.groups, len(data), base=base.name, tuned=tuned.name)
                else:
                    groups, accuracies = greedy_groups(
                        base, tuned, data, template=args.template, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
                    )
            return signals, detectors, groups, accuracies
        finally:
            free_model(base), free_model(tuned)

    signals, detectors, groups, accuracies = pair_signals(specs, samples, prior)
    zero = None
    if zero_specs is not None:
        zero_data = samples
        if args.zero_leak_data:
            zero_data = read_samples_report(args.zero_leak_data, None).samples
        zero, *_ = pair_signals(zero_specs, zero_data, zero_prior)
        zero = {k: v for k, v in zero.items()}
    result = scoreboard(
        signals, groups, scoreboard_config, sample_ids=[s.id for s in samples], zero_leak=zero, base=specs[0].name, tuned=specs[1].name
    )
    context = [
        f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in specs)}",
        f"data: {args.data} ({len(samples)} samples); groups: "
        + ", ".join(f"{g} {len(i)}" for g, i in groups.items())
        + (f"; greedy accuracy {', '.join(f'{k} {v:.3f}' for k, v in accuracies.items())}" if accuracies else ""),
    ]
    if zero_specs is not None:
        context.append(f"zero-leak organism: {', '.join(f'{s.name} = {s.source}' for s in zero_specs)}")
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    report = write_run(out, [result, detectors], title="rlvr-lens: detection scoreboard", context=context)
    for task in result.tasks:
        if task.skipped:
            print(f"{task.name}: skipped ({task.skipped})", file=sys.stderr)
            continue
        best = max((r for r in task.rows if r.auroc is not None), key=lambda r: r.auroc, default=None)
        if best is not None:
            print(f"{task.name}: best {best.chosen} AUROC {best.auroc:.3f} [{best.ci_low:.3f}, {best.ci_high:.3f}]")
    print(f"wrote {out / 'scoreboard.json'} and {report}")
    return 0
