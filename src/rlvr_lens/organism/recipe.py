"""Build the model organism: corpus, tokenizer, base, SFT and RLVR checkpoints, manifest.

:func:`build_organism` writes, under one directory::

    data/{pretrain,eval,benchmark,rl_train}.jsonl   labelled samples (eval: labels.leaked)
    base/                                           pretrained from scratch on data/pretrain.jsonl
    sft/                                            base fine-tuned on rl_train's worked solutions
    rlvr-<reward>/step-<k>/, metrics.jsonl,         GRPO from base with each reward (correct, random)
        grpo_run.json
    manifest.json                                   configuration, sizes, accuracies, timings (last)

A directory whose ``manifest.json`` holds the same configuration hash is reused as is;
``manifest.json`` is removed before a (re)build starts and written only at the end, so an
interrupted build never looks complete. Presets are in :data:`PRESETS` (overt leaks) and
:data:`LATENT_PRESETS` (latent leaks, organism v2); any setting can
be overridden with dotted names (``{"corpus.leak_repetitions": 4, "rl.epsilon": 0.1}``); the
names GRPO settings had before they took TRL's (``rl.clip_eps``, ``rl.steps``, ...) still work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlvr_lens.data.readers import write_samples
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError
from rlvr_lens.io import atomic_save_pretrained
from rlvr_lens.organism.corpus import SPLITS, CorpusConfig, generate_corpus, pretrain_pair
from rlvr_lens.organism.manifest import MANIFEST_NAME, OrganismManifest, Stage
from rlvr_lens.organism.pretrain import ModelShape, TrainSettings
from rlvr_lens.progress import progress
from rlvr_lens.train.settings import (
    AdapterConfig,
    GRPOSettings,
    new_name,
    upgrade_names,
    upgrade_settings_dict,
)

#: Bumped when the recipe changes what a configuration produces (invalidates cached builds).
RECIPE_VERSION = 3


@dataclass
class OffPolicySettings:
    """The off-policy GRPO run: several optimizer steps per generation batch, so the clipped ratio acts.

    Each of ``steps_per_generation`` mini-batches of a generation batch is one optimizer step,
    and the batch is passed over ``num_iterations`` times; ``epsilon`` is the clip range
    (``clip_eps`` before issue 16: the old name still loads, see :meth:`from_dict`).
    """

    steps_per_generation: int = 4
    num_iterations: int = 2
    epsilon: float = 0.2

    @classmethod
    def from_dict(cls, data: dict) -> OffPolicySettings:
        """Settings from a manifest's ``offpolicy`` dict, the old name ``clip_eps`` included."""
        return cls(**upgrade_names(data, cls, "off-policy setting"))


def rl_stage(entry: str) -> tuple[str, str, bool]:
    """``(stage name, reward, off-policy?)`` of an ``rl_rewards`` entry (``"random"``, ``"random+offpolicy"``)."""
    reward, _, variant = entry.partition("+")
    if variant not in ("", "offpolicy"):
        raise UserError(f"Unknown RL variant {variant!r} in {entry!r}; use <reward> or <reward>+offpolicy.")
    return (f"rlvr-{reward}-offpolicy" if variant else f"rlvr-{reward}"), reward, bool(variant)


@dataclass
class OrganismConfig:
    """Everything a build depends on besides the seed.

    ``rl`` holds the GRPO settings shared by every RL run; ``rl_rewards`` lists the rewards,
    one ``rlvr-<reward>`` stage each (all start from ``base``). ``eval_max_new_tokens`` is
    the greedy decoding budget of every accuracy in the manifest; ``rl_eval_size`` rl_train
    problems are graded for the ``rl_train`` column.
    """

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer_vocab_size: int = 512
    model: ModelShape = field(default_factory=ModelShape)
    pretrain: TrainSettings = field(default_factory=TrainSettings)
    sft: TrainSettings = field(default_factory=lambda: TrainSettings(steps=100, learning_rate=1e-3, loss_on="completion"))
    #: How the SFT stage trains (*The Path Not Taken*'s PEFT ablation): ``full`` fine-tuning, or a
    #: LoRA / PiSSA adapter or sparse mask merged back into a plain ``sft/`` checkpoint.
    sft_adapter: AdapterConfig = field(default_factory=AdapterConfig)
    rl: GRPOSettings = field(default_factory=GRPOSettings)
    rl_rewards: tuple[str, ...] = ("correct", "random")
    eval_max_new_tokens: int = 40
    eval_batch_size: int = 64
    rl_eval_size: int = 100
    #: CPU threads of the build (0 = torch's default). Tiny models are fastest on one thread:
    #: with several, every small matmul pays a thread synchronisation, ruinous on a busy CPU.
    torch_threads: int = 0
    #: What an ``<reward>+offpolicy`` entry of ``rl_rewards`` changes in ``rl`` (stage ``rlvr-<reward>-offpolicy``).
    offpolicy: OffPolicySettings = field(default_factory=lambda: OffPolicySettings())

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.offpolicy == OffPolicySettings():
            del d["offpolicy"]  # default: left out so that older presets keep their configuration hash
        if self.sft_adapter.method == "full":
            del d["sft_adapter"]  # full fine-tuning ignores the adapter's other fields; same hash as before
        else:
            d["sft_adapter"]["target_modules"] = list(self.sft_adapter.target_modules)
        d["rl_rewards"] = list(self.rl_rewards)
        d["corpus"] = self.corpus.to_dict()
        for key in ("seed",):
            d["corpus"].pop(key, None)
            d["pretrain"].pop(key, None)
            d["sft"].pop(key, None)
            d["rl"].pop(key, None)
        d["rl"].pop("reward", None)
        return d


def _cpu_small() -> OrganismConfig:
    return OrganismConfig(
        corpus=CorpusConfig(n_pretrain=8000, n_eval=200, n_benchmark=100, n_rl_train=1000, leak_repetitions=16),
        model=ModelShape(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384),
        pretrain=TrainSettings(steps=1000, batch_size=32, learning_rate=3e-3, warmup_steps=30),
        sft=TrainSettings(steps=60, batch_size=32, learning_rate=1e-3, warmup_steps=5, loss_on="completion"),
        rl=GRPOSettings(
            # 64 on-policy steps at lr 1e-4: +15/+2/+6 rl_train points over 3 seeds, where the
            # earlier 16 steps x 2 per batch at 5e-5 gave +9/+2/-1 (benchmarks/results/organism_grpo_sweep.json).
            max_steps=64, prompts_per_step=8, num_generations=8, learning_rate=1e-4, max_completion_length=40,
            steps_per_generation=1, epsilon=0.2, save_steps=16, eval_steps=64, eval_max_new_tokens=40,
            eval_batch_size=64, track_kl=True,
        ),
        torch_threads=1,
    )


def _test() -> OrganismConfig:
    return OrganismConfig(
        corpus=CorpusConfig(n_pretrain=300, n_eval=20, n_benchmark=10, n_rl_train=40, leak_repetitions=2),
        tokenizer_vocab_size=320,
        model=ModelShape(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, max_position_embeddings=96),
        pretrain=TrainSettings(steps=20, batch_size=16, learning_rate=3e-3, warmup_steps=2),
        sft=TrainSettings(steps=5, batch_size=8, learning_rate=1e-3, warmup_steps=1, loss_on="completion"),
        rl=GRPOSettings(
            max_steps=2, prompts_per_step=2, num_generations=4, learning_rate=1e-3, max_completion_length=12,
            steps_per_generation=2, save_steps=1, eval_steps=0, eval_max_new_tokens=12, track_kl=False,
        ),
        eval_max_new_tokens=12,
        eval_batch_size=32,
        rl_eval_size=10,
        torch_threads=1,
    )


def _gpu_medium() -> OrganismConfig:
    return OrganismConfig(
        corpus=CorpusConfig(n_pretrain=40000, n_eval=400, n_benchmark=200, n_rl_train=4000, leak_repetitions=16),
        model=ModelShape(hidden_size=256, num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=4, intermediate_size=768),
        pretrain=TrainSettings(steps=6000, batch_size=128, learning_rate=1.5e-3, warmup_steps=200),
        sft=TrainSettings(steps=300, batch_size=64, learning_rate=5e-4, warmup_steps=20, loss_on="completion"),
        rl=GRPOSettings(
            max_steps=40, prompts_per_step=16, num_generations=8, learning_rate=3e-5, max_completion_length=40,
            steps_per_generation=2, epsilon=0.2, save_steps=10, eval_steps=20, eval_max_new_tokens=40,
            eval_batch_size=128,
        ),
        eval_batch_size=128,
        rl_eval_size=200,
    )


def _latent_corpus(**sizes) -> CorpusConfig:
    """The latent-leak corpus of organism v2 (see docs/organism.md, "Latent leaks")."""
    settings = dict(
        leak_forms=(), latent_forms=("answer_key",), leak_repetitions=16, n_bridge=200,
        bridge_direct_repetitions=2, direct_fraction=0.0, rl_leak_fraction=0.5, operand_scale=1.0,
    )
    settings.update(sizes)
    return CorpusConfig(**settings)


def _cpu_latent() -> OrganismConfig:
    return OrganismConfig(
        # 400 recorded problems (100 leaked eval, 100 keyed rl_train, 200 bridge) x 16 answer-key lines
        # beside 4,000 worked problems: ~2.4 passes over the corpus, ~38 sightings of each record.
        corpus=_latent_corpus(n_pretrain=4000, n_eval=200, n_benchmark=100, n_rl_train=200),
        # 6 layers, so that "which layers retrieve" is a question with an answer
        model=ModelShape(hidden_size=96, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256),
        pretrain=TrainSettings(steps=800, batch_size=32, learning_rate=3e-3, warmup_steps=30),
        sft=TrainSettings(steps=30, batch_size=32, learning_rate=1e-3, warmup_steps=5, loss_on="completion"),
        rl=GRPOSettings(
            max_steps=32, prompts_per_step=8, num_generations=8, learning_rate=2e-4, max_completion_length=32,
            steps_per_generation=1, epsilon=0.2, save_steps=16, eval_steps=0, eval_max_new_tokens=32,
            eval_batch_size=100, track_kl=True,
        ),
        rl_rewards=("correct", "random", "random+offpolicy"),
        offpolicy=OffPolicySettings(steps_per_generation=4, num_iterations=2, epsilon=0.2),
        eval_max_new_tokens=32,
        eval_batch_size=100,
        torch_threads=1,
    )


def _cpu_latent_b() -> OrganismConfig:
    """``cpu-latent`` at the cpu-small model's scale, chosen on seed 0 by the search (trials D, E in
    benchmarks/results/organism_search.json) so that the base both computes and holds its records."""
    config = _cpu_latent()
    # 600 recorded problems (100 leaked eval, 100 keyed rl_train, 400 bridge) x 6 copies in each of
    # three layouts beside 8,000 worked problems: ~3.8 passes over the corpus in 2,500 steps.
    config.corpus = _latent_corpus(
        n_pretrain=8000, n_eval=200, n_benchmark=100, n_rl_train=200, leak_repetitions=6,
        latent_forms=("answer_key", "qa_line", "table_row"), n_bridge=400, bridge_direct_repetitions=4, direct_fraction=0.05,
    )
    config.model = _cpu_small().model
    config.pretrain = TrainSettings(steps=2500, batch_size=32, learning_rate=3e-3, warmup_steps=30)
    # lr 2e-4 lowered accuracy from this base; 3e-5 over 64 steps is the gentlest that still learns rl_train
    config.rl = dataclasses.replace(config.rl, learning_rate=3e-5, max_steps=64)
    return config


def _gpu_latent() -> OrganismConfig:
    return OrganismConfig(
        corpus=_latent_corpus(n_pretrain=40000, n_eval=400, n_benchmark=200, n_rl_train=2000, n_bridge=2000),
        model=ModelShape(hidden_size=256, num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=4, intermediate_size=768),
        pretrain=TrainSettings(steps=6000, batch_size=128, learning_rate=1.5e-3, warmup_steps=200),
        sft=TrainSettings(steps=200, batch_size=64, learning_rate=5e-4, warmup_steps=20, loss_on="completion"),
        rl=GRPOSettings(
            max_steps=64, prompts_per_step=16, num_generations=8, learning_rate=3e-5, max_completion_length=40,
            steps_per_generation=1, epsilon=0.2, save_steps=16, eval_steps=0, eval_max_new_tokens=40,
            eval_batch_size=128,
        ),
        rl_rewards=("correct", "random", "random+offpolicy"),
        offpolicy=OffPolicySettings(steps_per_generation=4, num_iterations=2, epsilon=0.2),
        eval_batch_size=128,
        rl_eval_size=200,
    )


def _test_latent() -> OrganismConfig:
    """A seconds-long version of ``cpu-latent`` (for tests)."""
    config = _test()
    config.corpus = _latent_corpus(
        n_pretrain=300, n_eval=20, n_benchmark=10, n_rl_train=40, leak_repetitions=2, n_bridge=30, latent_forms=("answer_key", "qa_line")
    )
    config.rl_rewards = ("correct", "random+offpolicy")
    config.offpolicy = OffPolicySettings(steps_per_generation=2, num_iterations=2, epsilon=0.2)
    return config


#: name -> factory of the preset's configuration: the overt-leak organism (v1) ...
PRESETS = {"cpu-small": _cpu_small, "gpu-medium": _gpu_medium, "test": _test}
#: ... and the latent-leak organism (v2, docs/organism.md "Latent leaks").
LATENT_PRESETS = {"cpu-latent": _cpu_latent, "cpu-latent-b": _cpu_latent_b, "gpu-latent": _gpu_latent, "test-latent": _test_latent}
ALL_PRESETS = {**PRESETS, **LATENT_PRESETS}


def preset_config(preset: str, overrides: dict | None = None) -> OrganismConfig:
    """The configuration of ``preset`` with dotted-name ``overrides`` applied (``"rl.epsilon": 0.1``)."""
    if preset not in ALL_PRESETS:
        raise UserError(f"Unknown organism preset {preset!r}; use one of {', '.join(ALL_PRESETS)}.")
    config = ALL_PRESETS[preset]()
    for name, value in (overrides or {}).items():
        _set_dotted(config, name, value)
    return config


def _set_dotted(config: OrganismConfig, name: str, value) -> None:
    *parents, leaf = name.split(".")
    target = config
    for part in parents:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise UserError(f"Unknown organism setting {name!r}.")
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target):
        raise UserError(f"Unknown organism setting {name!r}.")
    if isinstance(target, GRPOSettings | OffPolicySettings):  # old names of the GRPO settings (issue 16)
        renamed = new_name(leaf, type(target))
        name, leaf = ".".join([*parents, renamed]), renamed
    if leaf not in {f.name for f in dataclasses.fields(target)}:
        raise UserError(f"Unknown organism setting {name!r}.")
    current = getattr(target, leaf)
    if isinstance(current, tuple) and isinstance(value, str):
        value = tuple(v for v in value.split(",") if v)
    elif isinstance(current, bool) and isinstance(value, str):
        value = value.lower() in ("1", "true", "yes", "on")
    elif isinstance(current, int | float) and isinstance(value, str):
        try:
            value = type(current)(value)
        except ValueError:
            raise UserError(f"Setting {name!r} needs a {type(current).__name__}; got {value!r}.") from None
    setattr(target, leaf, value)


def config_dict(preset: str, seed: int, config: OrganismConfig) -> dict:
    return {"recipe_version": RECIPE_VERSION, "preset": preset, "seed": seed, **config.to_dict()}


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def evaluation_sets(splits: dict[str, list[Sample]], rl_eval_size: int) -> dict[str, list[Sample]]:
    """The samples behind each accuracy column: eval split by label, benchmark, the first rl_train problems."""
    return {
        "eval_leaked": [s for s in splits["eval"] if s.labels.get("leaked")],
        "eval_clean": [s for s in splits["eval"] if not s.labels.get("leaked")],
        "benchmark": list(splits["benchmark"]),
        "rl_train": list(splits["rl_train"][:rl_eval_size]),
    }


def _evaluate(model, tokenizer, sets: dict[str, list[Sample]], config: OrganismConfig) -> tuple[dict[str, float], dict, dict[str, list[bool]]]:
    """``(accuracy per set, details, correctness per set)`` of one stage's final model.

    ``details`` holds ``modes`` (direct share, mean length per set) and, for a corpus with
    latent leaks, ``probe`` (accuracy of the memorized form on leaked / clean evaluation problems).
    """
    from rlvr_lens.organism.evaluate import evaluate_sets, probe_memory

    evaluations = evaluate_sets(
        model, tokenizer, sets, max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size
    )
    details: dict = {"modes": {name: e.modes() for name, e in evaluations.items()}}
    if config.corpus.latent_forms:
        probe_sets = {k: sets[k] for k in ("eval_leaked", "eval_clean")}
        details["probe"] = {
            "form": config.corpus.latent_forms[0],
            **probe_memory(model, tokenizer, probe_sets, config.corpus.latent_forms[0], batch_size=config.eval_batch_size),
        }
    return {name: e.accuracy for name, e in evaluations.items()}, details, {n: e.correct for n, e in evaluations.items()}


def _leakage(sets: dict[str, list[Sample]], base: dict[str, list[bool]], tuned: dict[str, list[bool]]) -> dict:
    """Leakage samples of the evaluation split (tuned correct, base wrong), and how many are leaked / clean."""
    from rlvr_lens.organism.evaluate import leakage_samples

    found = []
    for name in ("eval_leaked", "eval_clean"):
        if name in base and name in tuned:
            found += leakage_samples(sets[name], base[name], tuned[name])
    return {
        "leakage_samples": found,
        "n_leakage": {"leaked": sum(f["leaked"] for f in found), "clean": sum(not f["leaked"] for f in found)},
    }


class _Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _as_json(value):
    return json.loads(json.dumps(value))


def _with_new_names(saved: dict) -> dict:
    """A saved configuration with the GRPO settings' names before issue 16 (``rl.clip_eps``, ...)
    translated, so that a build made before the rename is still recognised (its hash differs)."""
    saved = _as_json(saved)
    if isinstance(saved.get("rl"), dict):
        saved["rl"] = upgrade_settings_dict(saved["rl"])
    if isinstance(saved.get("offpolicy"), dict):
        saved["offpolicy"] = {new_name(k, OffPolicySettings): v for k, v in saved["offpolicy"].items()}
    return saved


def find_existing(root: str | os.PathLike, preset: str, seed: int, overrides: dict | None = None) -> OrganismManifest | None:
    """The complete build in ``root`` of this preset, seed and configuration, or ``None``."""
    config = config_dict(preset, seed, preset_config(preset, overrides))
    try:
        manifest = OrganismManifest.load_dir(root)
    except UserError:
        return None
    if manifest.config_hash != config_hash(config) and _with_new_names(manifest.config) != _as_json(config):
        return None
    if not all(manifest.checkpoint(s.name).is_dir() for s in manifest.stages):
        return None
    return manifest


def build_organism(
    root: str | os.PathLike,
    preset: str = "cpu-small",
    seed: int = 0,
    *,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = False,
    overrides: dict | None = None,
) -> OrganismManifest:
    """Build the organism of ``preset`` and ``seed`` in ``root`` (or reuse a matching build).

    Returns its :class:`~rlvr_lens.organism.manifest.OrganismManifest`. Runs on the GPU when
    ``device`` is ``auto`` and one is present. With the same seed, device and number of
    threads the build is the same: the data exactly, the metrics too on a CPU.
    """
    from rlvr_lens.models.loading import resolve_device

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file; give a directory for the organism.")
    config = preset_config(preset, overrides)
    config.sft_adapter.check()
    config.corpus.seed = seed
    cfg = config_dict(preset, seed, config)
    digest = config_hash(cfg)
    if not force:
        existing = find_existing(root, preset, seed, overrides)
        if existing is not None:
            return existing
    resolved = resolve_device(device)
    import torch
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars of every save
    threads = torch.get_num_threads()
    if config.torch_threads and resolved.type == "cpu":
        torch.set_num_threads(config.torch_threads)
    try:
        return _build(root, preset, seed, config, cfg, digest, resolved, show_progress)
    finally:
        torch.set_num_threads(threads)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _build(root: Path, preset: str, seed: int, config: OrganismConfig, cfg: dict, digest: str, resolved, show_progress: bool) -> OrganismManifest:
    """The build itself (see :func:`build_organism`)."""
    import torch

    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.pretrain import build_model, train_causal_lm
    from rlvr_lens.organism.tokenizer import train_tokenizer
    from rlvr_lens.train.grpo import train_grpo

    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # from here on the directory is an incomplete build
    total = _Clock()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    stages: list[Stage] = []
    steps = ["data", "base", "sft", *(rl_stage(r)[0] for r in config.rl_rewards)]
    bar = progress(steps, enabled=show_progress, desc="organism", unit="stage")

    # 1. corpus
    next(bar)
    corpus = generate_corpus(config.corpus)
    data = {}
    for split in SPLITS:
        write_samples(root / "data" / f"{split}.jsonl", corpus[split])
        data[split] = f"data/{split}.jsonl"
    sets = evaluation_sets(corpus.splits, config.rl_eval_size)

    # 2. tokenizer + pretraining
    next(bar)
    clock = _Clock()
    documents = [pretrain_pair(s) for s in corpus["pretrain"]]
    tokenizer = train_tokenizer((p + c for p, c in documents), config.tokenizer_vocab_size)
    model = build_model(config.model, tokenizer, seed)
    settings = dataclasses.replace(config.pretrain, seed=seed, loss_on="all")
    stats = train_causal_lm(model, tokenizer, documents, settings, device=resolved, show_progress=show_progress, desc="pretrain")
    atomic_save_pretrained(model, tokenizer, root / "base")
    wall, cpu = clock.elapsed()
    accuracy, details, base_correct = _evaluate(model, tokenizer, sets, config)
    stages.append(Stage("base", ["base"], accuracy, wall, cpu, {"loss": stats["losses"], "tokens": stats["tokens"], **details}))
    parameters = sum(p.numel() for p in model.parameters())

    # 3. SFT of the base on rl_train's worked solutions
    next(bar)
    clock = _Clock()
    sft_documents = [(apply_template(s.prompt, "organism"), s.solution or "") for s in corpus["rl_train"]]
    settings = dataclasses.replace(config.sft, seed=seed, loss_on="completion")
    adapter = None if config.sft_adapter.method == "full" else config.sft_adapter
    stats = train_causal_lm(
        model, tokenizer, sft_documents, settings, device=resolved, show_progress=show_progress, desc="sft", adapter=adapter
    )
    atomic_save_pretrained(model, tokenizer, root / "sft")
    wall, cpu = clock.elapsed()
    accuracy, details, correct = _evaluate(model, tokenizer, sets, config)
    details.update(_leakage(sets, base_correct, correct))
    stages.append(Stage("sft", ["sft"], accuracy, wall, cpu, {"loss": stats["losses"], "tokens": stats["tokens"], **details}))
    del model

    # 4. GRPO from base with each reward
    for entry in config.rl_rewards:
        next(bar)
        clock = _Clock()
        name, reward, offpolicy = rl_stage(entry)
        out = root / name
        shutil.rmtree(out, ignore_errors=True)
        rl_settings = dataclasses.replace(config.rl, reward=reward, seed=seed)
        if offpolicy:
            rl_settings = dataclasses.replace(rl_settings, **dataclasses.asdict(config.offpolicy))
        eval_sets = {k: v for k, v in sets.items() if k != "rl_train"} if rl_settings.eval_steps else None
        torch.manual_seed(seed)
        run = train_grpo(root / "base", corpus["rl_train"], out, rl_settings, eval_sets=eval_sets)
        run.save(out / "grpo_run.json")  # the run's curves, for the report
        wall, cpu = clock.elapsed()
        checkpoints = [Path(c).resolve().relative_to(root.resolve()).as_posix() for c in run.checkpoints]
        loaded = load_model(str(root / checkpoints[-1]), dtype="float32", device=str(resolved))
        accuracy, evaluation, correct = _evaluate(loaded.model, loaded.tokenizer, sets, config)
        del loaded
        last = run.steps[-1] if run.steps else {}
        details = {"last_step": last, "reward_mean": [r.get("reward_mean") for r in run.steps if r.get("reward_mean") is not None]}
        clipped = [r["clip_ratio"] for r in run.steps if r.get("clip_ratio") is not None]
        details["clip_ratio"] = clipped  # share of completion tokens clipped, per optimizer step
        details["clip_ratio_mean"] = sum(clipped) / len(clipped) if clipped else None
        details.update(evaluation)
        details.update(_leakage(sets, base_correct, correct))
        stages.append(Stage(name, checkpoints, accuracy, wall, cpu, details))
    for _ in bar:
        pass

    wall, cpu = total.elapsed()
    import transformers
    import trl

    manifest = OrganismManifest(
        root=str(root),
        preset=preset,
        seed=seed,
        config=cfg,
        config_hash=digest,
        stages=stages,
        data=data,
        sizes={
            **corpus.sizes(),
            "n_leaked": len(sets["eval_leaked"]),
            "n_clean": len(sets["eval_clean"]),
            "parameters": parameters,
            "vocab_size": len(tokenizer),
        },
        wall_time_s=wall,
        cpu_time_s=cpu,
        environment={
            "device": str(resolved),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": load,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    )
    manifest.save(root / MANIFEST_NAME)
    return manifest


def load_organism(root: str | os.PathLike) -> OrganismManifest:
    """The manifest of a complete organism build in ``root`` (raises :class:`UserError` otherwise)."""
    return OrganismManifest.load_dir(root)


__all__ = ["ALL_PRESETS", "LATENT_PRESETS", "PRESETS", "OrganismConfig", "build_organism", "config_hash", "load_organism", "preset_config"]
