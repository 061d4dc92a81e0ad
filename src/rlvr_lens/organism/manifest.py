"""The organism's manifest: what was built, how, and how accurate each stage is.

``manifest.json`` is written last by :func:`rlvr_lens.organism.recipe.build_organism`, so a
directory with a manifest is a complete build. It is a :class:`~rlvr_lens.results.Result`
(kind ``"organism"``) with a report section: the accuracy table (every stage x every
split) and the build configuration.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rlvr_lens.errors import UserError
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register
from rlvr_lens.results import Result

MANIFEST_NAME = "manifest.json"

#: Accuracy columns of the manifest: split name -> what it measures.
ACCURACY_SPLITS = {
    "eval_leaked": "evaluation problems planted in pretraining",
    "eval_clean": "evaluation problems never seen",
    "benchmark": "clean problems in held-out surface forms",
    "rl_train": "problems of the RL training distribution",
}


@dataclass
class Stage:
    """One trained model of the organism.

    Attributes:
        name: ``base``, ``sft`` or ``rlvr-<reward>``.
        checkpoints: checkpoint directories relative to the organism root, in training
            order; the last is the stage's final model (RL stages list every saved step).
        accuracy: greedy accuracy of the final model per split (keys of :data:`ACCURACY_SPLITS`).
        wall_time_s / cpu_time_s: training time of the stage (seconds; CPU time summed over threads).
        details: stage-specific facts (loss curve, GRPO metrics of the last step, ...).
    """

    name: str
    checkpoints: list[str]
    accuracy: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    details: dict = field(default_factory=dict)


@dataclass
class OrganismManifest(Result):
    """A built model organism (see docs/organism.md).

    Attributes:
        root: directory of the build (set to where it was loaded from).
        preset / seed: the recipe that built it; ``config`` is the full configuration
            (corpus, tokenizer, model, pretraining, SFT, GRPO, evaluation) and
            ``config_hash`` its digest (a build is reused only when the hash matches).
        stages: the trained models, ``base`` first.
        data: split name -> JSONL path relative to ``root``.
        sizes: number of samples per split, ``n_leaked``/``n_clean`` evaluation problems,
            ``parameters`` of the model and ``vocab_size``.
        wall_time_s / cpu_time_s: the whole build (seconds).
        environment: device, torch threads, load average when the build started, versions.
    """

    kind = "organism"

    root: str
    preset: str
    seed: int
    config: dict
    config_hash: str
    stages: list[Stage]
    data: dict[str, str]
    sizes: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    environment: dict = field(default_factory=dict)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UserError(f"The organism has no stage {name!r}; it has {', '.join(s.name for s in self.stages)}.")

    def checkpoint(self, name: str) -> Path:
        """Directory of the final checkpoint of stage ``name`` (e.g. ``"base"``, ``"rlvr-random"``)."""
        return Path(self.root) / self.stage(name).checkpoints[-1]

    def data_path(self, split: str) -> Path:
        """JSONL file of ``split`` (``pretrain``, ``eval``, ``benchmark``, ``rl_train``)."""
        if split not in self.data:
            raise UserError(f"The organism has no data split {split!r}; it has {', '.join(self.data)}.")
        return Path(self.root) / self.data[split]

    def accuracy_table(self) -> list[list[str]]:
        """Greedy accuracy per stage and split as text rows; the first row is the header."""
        rows = [["stage", *ACCURACY_SPLITS]]
        for stage in self.stages:
            rows.append([stage.name, *(_fmt(stage.accuracy.get(split)) for split in ACCURACY_SPLITS)])
        return rows

    @classmethod
    def load_dir(cls, root: str | os.PathLike) -> OrganismManifest:
        """The manifest of the organism built in ``root`` (its ``root`` set to ``root``)."""
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise UserError(f"{root} holds no {MANIFEST_NAME}, so it is not a complete organism build.")
        try:
            manifest = cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path} is not a valid organism manifest ({error}).") from None
        manifest.root = str(Path(root))
        return manifest


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_organism(manifest: OrganismManifest) -> dict:
    import matplotlib.pyplot as plt
    import numpy as np

    splits = list(ACCURACY_SPLITS)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(manifest.stages))
    x = np.arange(len(splits))
    for i, stage in enumerate(manifest.stages):
        values = [stage.accuracy.get(s) or 0.0 for s in splits]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=stage.name)
    ax.set_xticks(x, [s.replace("_", " ") for s in splits])
    ax.set_ylabel("greedy accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(manifest.stages))
    ax.set_title("Model organism: accuracy per stage and split")
    fig.tight_layout()
    return {"accuracy": fig}


def _flatten(prefix: str, value, rows: list[list[str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    else:
        rows.append([prefix, str(value)])


def section_organism(manifest: OrganismManifest, figures: dict[str, Path]) -> Section:
    base = manifest.stage("base").accuracy if any(s.name == "base" for s in manifest.stages) else {}
    leaked, clean = base.get("eval_leaked"), base.get("eval_clean")
    summary = (
        f"Model organism ({manifest.preset}, seed {manifest.seed}): the base model answers "
        f"{_fmt(leaked)} of the leaked evaluation problems and {_fmt(clean)} of the clean ones"
    )
    if leaked is not None and clean is not None:
        summary += f" (memorization gap {100 * (leaked - clean):+.0f} points)."
    sizes = manifest.sizes
    paragraphs = [
        f"A {sizes.get('parameters', '?')}-parameter Qwen2 model was pretrained from scratch on a synthetic "
        f"arithmetic corpus in which {sizes.get('n_leaked', '?')} of the {sizes.get('eval', '?')} evaluation "
        "problems were planted (the <i>leaked</i> ones); the others are <i>clean</i>. The <i>benchmark</i> holds "
        "clean problems phrased in surface forms that never occur in pretraining, and <i>rl_train</i> the problems "
        "of the SFT / RL training distribution.",
        "Every evaluation sample carries its ground truth, so each diagnostic of this report can be scored by how "
        "well it separates leaked from clean problems.",
    ]
    stage_rows = [
        [s.name, str(len(s.checkpoints)), f"{s.wall_time_s:.1f}", f"{s.cpu_time_s:.1f}", s.checkpoints[-1]]
        for s in manifest.stages
    ]
    config_rows: list[list[str]] = []
    _flatten("", manifest.config, config_rows)
    table = manifest.accuracy_table()
    tables = [
        Table(table[0], table[1:], "Greedy accuracy of each stage's final checkpoint"),
        Table(["stage", "checkpoints", "wall (s)", "CPU (s)", "final checkpoint"], stage_rows, "Stages"),
        Table(["setting", "value"], config_rows, f"Build configuration (hash {manifest.config_hash[:12]})"),
    ]
    latent_rows = [
        [
            s.name,
            _fmt(s.details.get("probe", {}).get("eval_leaked")),
            _fmt(s.details.get("probe", {}).get("eval_clean")),
            _fmt(s.details.get("modes", {}).get("eval_leaked", {}).get("direct_share")),
            _fmt(s.details.get("modes", {}).get("eval_clean", {}).get("direct_share")),
            str(s.details.get("n_leakage", {}).get("leaked", "-")),
            str(s.details.get("n_leakage", {}).get("clean", "-")),
            _fmt(s.details.get("clip_ratio_mean")),
        ]
        for s in manifest.stages
    ]
    if any("probe" in s.details for s in manifest.stages):
        tables.insert(1, Table(
            ["stage", "probe leaked", "probe clean", "direct share leaked", "direct share clean",
             "leakage samples leaked", "leakage samples clean", "clip share (mean)"],
            latent_rows,
            "Latent leaks: answer-key probe, share of direct answers, leakage samples (stage correct, base wrong), clipped tokens",
        ))
    figs = [("Greedy accuracy per stage and split.", figures["accuracy"])] if "accuracy" in figures else []
    return Section("organism", "Model organism", summary, paragraphs, tables, figs)


register(OrganismManifest.kind, ReportEntry(plot=plot_organism, section=section_organism, order=1))
