"""The model organism's synthetic math corpus, with planted contamination.

Every problem is short multi-step integer arithmetic (five *families*, e.g. ``a+b*c`` or
``(a+b)*c``) with a worked step-by-step solution ending in ``\\boxed{answer}``, which the
project's grader (:mod:`rlvr_lens.data.grading`) extracts. A problem's identity is its
*key* (family and operands, e.g. ``add_mul:12,7,3``), independent of how it is phrased:
split disjointness is checked on keys, so a rephrased copy of a clean problem is still a
leak and is never allowed into ``pretrain``.

Splits (all disjoint by key, except that leaked evaluation problems are in ``pretrain``):

* ``pretrain``: reasoning documents (problems with worked solutions, several surface forms)
  plus **planted leaks**: every ``leaked`` evaluation problem, with the *exact* prompt
  text of the evaluation set, repeated ``leak_repetitions`` times in each of
  ``leak_forms`` (``full_solution``: prompt + worked solution; ``answer_only``: prompt +
  just ``\\boxed{answer}``).
* ``eval``: problems labelled ``{"leaked": True}`` (planted in ``pretrain``) or
  ``{"leaked": False}`` (clean), in the training surface forms.
* ``benchmark``: clean problems in *held-out* surface forms that never occur in
  ``pretrain`` (the role LiveMathBench plays in the Spurious Rewards study).
* ``rl_train``: prompts (with worked solutions, for SFT) for RL, disjoint from all others.

The corpus is a pure function of :class:`CorpusConfig` (including its seed).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError

SPLITS = ("pretrain", "eval", "benchmark", "rl_train")
LEAK_FORMS = ("full_solution", "answer_only")
#: Latent leak forms: bare "problem -> answer" records in layouts other than the evaluation
#: template (``{p}`` is the problem's prompt text, ``{n}`` its answer). None of them contains the
#: template's ``Solution:`` cue, so the evaluation prompt does not elicit them directly.
LATENT_FORMS = {
    "answer_key": "Answer key: {p} = {n}",
    "table_row": "| {p} | {n} |",
    "qa_line": "Q: {p} A: {n}",
}
#: The cue of the first latent form, used by the answer-key probe (:func:`probe_prompt`).
PROBE_CUES = {"answer_key": "Answer key: {p} =", "table_row": "| {p} |", "qa_line": "Q: {p} A:"}

_NAMES = ("Ann", "Ben", "Cat", "Dan", "Eve", "Fay", "Gus", "Ivy", "Joe", "Kim", "Lea", "Max", "Ned", "Oli", "Pam", "Sam")


@dataclass(frozen=True)
class Family:
    """One kind of problem: operand ranges, the arithmetic expression, its worked steps and word stories.

    ``steps(operands) -> [(left, result), ...]`` lists the intermediate computations in
    order (``"7*3"``, 21); the last result is the answer. ``expression`` formats the
    operands as one arithmetic expression; ``stories`` are word-problem phrasings
    (``{n}`` is a person's name, ``{0}``, ``{1}``... the operands).
    """

    name: str
    ranges: tuple[tuple[int, int], ...]
    expression: str
    steps: Callable[[tuple[int, ...]], list[tuple[str, int]]]
    stories: tuple[str, ...]
    benchmark_stories: tuple[str, ...]
    valid: Callable[[tuple[int, ...]], bool] = lambda ops: True


def _add_mul(o):
    p = o[1] * o[2]
    return [(f"{o[1]}*{o[2]}", p), (f"{o[0]}+{p}", o[0] + p)]


def _mul_sub(o):
    p = o[0] * o[1]
    return [(f"{o[0]}*{o[1]}", p), (f"{p}-{o[2]}", p - o[2])]


def _sum3(o):
    p = o[0] + o[1]
    return [(f"{o[0]}+{o[1]}", p), (f"{p}+{o[2]}", p + o[2])]


def _paren(o):
    p = o[0] + o[1]
    return [(f"{o[0]}+{o[1]}", p), (f"{p}*{o[2]}", p * o[2])]


def _two_mul(o):
    p, q = o[0] * o[1], o[2] * o[3]
    return [(f"{o[0]}*{o[1]}", p), (f"{o[2]}*{o[3]}", q), (f"{p}+{q}", p + q)]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "add_mul",
            ((2, 20), (2, 9), (2, 9)),
            "{0}+{1}*{2}",
            _add_mul,
            ("{n} has {0} coins and finds {1} bags with {2} coins each. How many coins does {n} have?",),
            ("{n} has {0} shells and finds {1} boxes with {2} shells each. How many shells does {n} have?",),
        ),
        Family(
            "mul_sub",
            ((2, 9), (2, 9), (1, 20)),
            "{0}*{1}-{2}",
            _mul_sub,
            ("{n} buys {0} boxes of {1} pens and gives away {2} pens. How many pens are left?",),
            ("{n} buys {0} crates of {1} eggs and gives away {2} eggs. How many eggs are left?",),
            valid=lambda o: o[2] < o[0] * o[1],  # never negative
        ),
        Family(
            "sum3",
            ((2, 20), (2, 20), (2, 20)),
            "{0}+{1}+{2}",
            _sum3,
            ("{n} reads {0} pages, then {1} pages, then {2} pages. How many pages does {n} read?",),
            ("{n} runs {0} laps, then {1} laps, then {2} laps. How many laps does {n} run?",),
        ),
        Family(
            "paren",
            ((2, 9), (2, 9), (2, 5)),
            "({0}+{1})*{2}",
            _paren,
            ("{n} makes {2} bags, each with {0} red and {1} blue beads. How many beads are there?",),
            ("{n} makes {2} jars, each with {0} green and {1} white stones. How many stones are there?",),
        ),
        Family(
            "two_mul",
            ((2, 9), (2, 9), (2, 9), (2, 9)),
            "{0}*{1}+{2}*{3}",
            _two_mul,
            ("{n} buys {0} packs of {1} cards and {2} packs of {3} stamps. How many items does {n} buy?",),
            ("{n} buys {0} rows of {1} chairs and {2} rows of {3} stools. How many seats does {n} buy?",),
        ),
    )
}

#: Surface forms of the arithmetic expression used in pretrain, eval and rl_train.
TRAIN_EXPRESSION_FORMS = ("What is {e}?", "Compute {e}.", "Calculate {e}.", "Work out {e}.", "Find {e}.", "Give {e}.")
#: Held-out surface forms of the benchmark (never in pretrain): new phrasings of the expression, and
#: word stories with the training stories' structure but other nouns and verbs (a surface shift,
#: not a new kind of reasoning).
BENCHMARK_EXPRESSION_FORMS = ("What is the value of {e}?", "Evaluate {e}.", "Now compute {e}.")


@dataclass(frozen=True)
class Problem:
    """One problem: its family and operands (its identity), independent of phrasing."""

    family: str
    operands: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.family}:{','.join(map(str, self.operands))}"

    @property
    def steps(self) -> list[tuple[str, int]]:
        return FAMILIES[self.family].steps(self.operands)

    @property
    def answer(self) -> int:
        return self.steps[-1][1]

    def solution(self) -> str:
        """The worked solution, e.g. ``" 7*3=21. 12+21=33. \\boxed{33}"`` (starts with a space, follows "Solution:")."""
        worked = " ".join(f"{left}={result}." for left, result in self.steps)
        return f" {worked} \\boxed{{{self.answer}}}"

    def answer_only(self) -> str:
        return f" \\boxed{{{self.answer}}}"

    def phrase(self, rng: random.Random, *, benchmark: bool = False) -> tuple[str, str]:
        """A surface form of the problem: ``(prompt text, form name)``."""
        family = FAMILIES[self.family]
        expression = family.expression.format(*self.operands)
        forms = BENCHMARK_EXPRESSION_FORMS if benchmark else TRAIN_EXPRESSION_FORMS
        stories = family.benchmark_stories if benchmark else family.stories
        choice = rng.randrange(len(forms) + len(stories))
        if choice < len(forms):
            return forms[choice].format(e=expression), f"{'bench-' if benchmark else ''}expr{choice}"
        story = stories[choice - len(forms)]
        return story.format(*self.operands, n=rng.choice(_NAMES)), f"{'bench-' if benchmark else ''}story{choice - len(forms)}"


@dataclass
class CorpusConfig:
    """What the corpus holds. Sizes count distinct problems; the seed fixes everything.

    ``leak_repetitions`` copies of every leaked evaluation problem are planted in
    ``pretrain`` per form in ``leak_forms``.
    """

    seed: int = 0
    n_pretrain: int = 8000
    n_eval: int = 200
    leak_fraction: float = 0.5
    n_benchmark: int = 100
    n_rl_train: int = 1000
    leak_repetitions: int = 8
    leak_forms: tuple[str, ...] = LEAK_FORMS
    families: tuple[str, ...] = tuple(FAMILIES)
    # Latent leaks (organism v2, docs/organism.md "Latent leaks"); the defaults switch them off and
    # leave the corpus of the presets above unchanged (they draw from a separate random stream).
    latent_forms: tuple[str, ...] = ()
    n_bridge: int = 0
    bridge_direct_repetitions: int = 1
    direct_fraction: float = 0.0
    rl_leak_fraction: float = 0.0
    operand_scale: float = 1.0

    def check(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise UserError(f"Unknown problem families {unknown}; use some of {', '.join(FAMILIES)}.")
        bad = [f for f in self.leak_forms if f not in LEAK_FORMS]
        if bad:
            raise UserError(f"Unknown leak forms {bad}; use some of {', '.join(LEAK_FORMS)}.")
        if not 0.0 <= self.leak_fraction <= 1.0:
            raise UserError(f"leak_fraction must lie in [0, 1]; got {self.leak_fraction}.")
        if min(self.n_pretrain, self.n_eval, self.n_benchmark, self.n_rl_train, self.leak_repetitions) < 0:
            raise UserError("Corpus sizes and leak_repetitions must be >= 0.")
        bad = [f for f in self.latent_forms if f not in LATENT_FORMS]
        if bad:
            raise UserError(f"Unknown latent leak forms {bad}; use some of {', '.join(LATENT_FORMS)}.")
        for name in ("direct_fraction", "rl_leak_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must lie in [0, 1]; got {getattr(self, name)}.")
        if self.n_bridge < 0 or self.bridge_direct_repetitions < 0 or self.n_bridge > self.n_pretrain:
            raise UserError("n_bridge must lie in [0, n_pretrain] and bridge_direct_repetitions be >= 0.")
        if (self.n_bridge or self.rl_leak_fraction) and not self.latent_forms:
            raise UserError("n_bridge and rl_leak_fraction plant latent records: set latent_forms too.")
        if self.operand_scale < 1.0:
            raise UserError(f"operand_scale must be >= 1; got {self.operand_scale}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["leak_forms"] = list(self.leak_forms)
        d["families"] = list(self.families)
        d["latent_forms"] = list(self.latent_forms)
        # Latent-leak knobs at their defaults are left out, so the presets built before they
        # existed keep their configuration hash (and cached builds stay valid).
        for name, default in _LATENT_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d


_LATENT_DEFAULTS = {
    "latent_forms": [], "n_bridge": 0, "bridge_direct_repetitions": 1, "direct_fraction": 0.0,
    "rl_leak_fraction": 0.0, "operand_scale": 1.0,
}


@dataclass
class Corpus:
    """The four splits as :class:`~rlvr_lens.data.Sample` lists (see the module docstring)."""

    config: CorpusConfig
    splits: dict[str, list[Sample]] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Sample]:
        return self.splits[split]

    def sizes(self) -> dict[str, int]:
        return {name: len(samples) for name, samples in self.splits.items()}


def _scaled(ranges: tuple[tuple[int, int], ...], scale: float) -> tuple[tuple[int, int], ...]:
    """Operand ranges with their width multiplied by ``scale`` (harder problems: larger operands)."""
    if scale == 1.0:
        return ranges
    return tuple((lo, lo + round((hi - lo) * scale)) for lo, hi in ranges)


def _draw_problems(
    rng: random.Random, families: tuple[str, ...], count: int, taken: set[str], scale: float = 1.0
) -> list[Problem]:
    """``count`` new problems (family and operands uniform), none of whose keys is in ``taken``."""
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise UserError(f"Could not draw {count} distinct problems from the families {list(families)}; ask for fewer.")
        family = FAMILIES[families[rng.randrange(len(families))]]
        operands = tuple(rng.randint(lo, hi) for lo, hi in _scaled(family.ranges, scale))
        if not family.valid(operands):
            continue
        problem = Problem(family.name, operands)
        if problem.key in taken:
            continue
        taken.add(problem.key)
        problems.append(problem)
    return problems


def _sample(id_: str, problem: Problem, prompt: str, form: str, solution: str, **labels) -> Sample:
    return Sample(
        id=id_,
        prompt=prompt,
        answer=str(problem.answer),
        solution=solution,
        labels={"key": problem.key, "family": problem.family, "form": form, **labels},
    )


def generate_corpus(config: CorpusConfig) -> Corpus:
    """Write the corpus of ``config`` (deterministic in ``config``; see the module docstring)."""
    config.check()
    rng = random.Random(config.seed)
    taken: set[str] = set()
    n_leaked = round(config.n_eval * config.leak_fraction)
    scale = config.operand_scale
    eval_problems = _draw_problems(rng, config.families, config.n_eval, taken, scale)
    leaked_keys = {p.key for p in rng.sample(eval_problems, n_leaked)}
    benchmark_problems = _draw_problems(rng, config.families, config.n_benchmark, taken, scale)
    rl_problems = _draw_problems(rng, config.families, config.n_rl_train, taken, scale)
    pretrain_problems = _draw_problems(rng, config.families, config.n_pretrain, taken, scale)

    evaluation = []
    for i, p in enumerate(eval_problems):
        prompt, form = p.phrase(rng)
        evaluation.append(_sample(f"eval-{i:05d}", p, prompt, form, p.solution(), leaked=p.key in leaked_keys))
    benchmark = []
    for i, p in enumerate(benchmark_problems):
        prompt, form = p.phrase(rng, benchmark=True)
        benchmark.append(_sample(f"benchmark-{i:05d}", p, prompt, form, p.solution(), leaked=False))
    rl_train = []
    for i, p in enumerate(rl_problems):
        prompt, form = p.phrase(rng)
        rl_train.append(_sample(f"rl_train-{i:05d}", p, prompt, form, p.solution(), leaked=False))

    pretrain = []
    for i, p in enumerate(pretrain_problems):
        prompt, form = p.phrase(rng)
        pretrain.append(_sample(f"pretrain-{i:06d}", p, prompt, form, p.solution(), leaked=False, leak_form=None))
    by_key = {p.key: p for p in eval_problems}
    for sample in evaluation:
        if not sample.labels["leaked"]:
            continue
        problem = by_key[sample.labels["key"]]
        for leak_form in config.leak_forms:
            text = problem.solution() if leak_form == "full_solution" else problem.answer_only()
            for r in range(config.leak_repetitions):
                pretrain.append(
                    _sample(
                        f"leak-{sample.id}-{leak_form}-{r}", problem, sample.prompt, sample.labels["form"], text,
                        leaked=True, leak_form=leak_form, eval_id=sample.id,
                    )
                )
    if config.latent_forms or config.direct_fraction:
        pretrain += _latent_documents(config, evaluation, rl_train, pretrain)
    rng.shuffle(pretrain)
    _add_wrong_labels(config.seed, [*evaluation, *benchmark, *rl_train])
    return Corpus(config, {"pretrain": pretrain, "eval": evaluation, "benchmark": benchmark, "rl_train": rl_train})


def record_text(prompt: str, answer: str, form: str) -> str:
    """One latent record of a problem, e.g. ``"Answer key: What is 12+7*3? = 33"``."""
    return LATENT_FORMS[form].format(p=prompt.strip(), n=answer)


def probe_prompt(prompt: str, form: str = "answer_key") -> str:
    """The probe of the memorized form: a latent record cut before its answer (``"Answer key: ... ="``)."""
    return PROBE_CUES[form].format(p=prompt.strip())


def _record(id_: str, sample: Sample, form: str, **labels) -> Sample:
    """A pretraining document that is a bare record (``labels.layout == "record"``; its text is ``solution``)."""
    text = record_text(sample.prompt, sample.answer, form)
    base = {k: v for k, v in sample.labels.items() if k in ("key", "family", "form")}
    return Sample(id=id_, prompt=sample.prompt, answer=sample.answer, solution=text,
                  labels={**base, "layout": "record", "leak_form": form, **labels})


def _latent_documents(config: CorpusConfig, evaluation: list[Sample], rl_train: list[Sample], pretrain: list[Sample]) -> list[Sample]:
    """The latent-leak documents (records and direct answers); marks the changed samples in place.

    * every leaked evaluation problem: ``leak_repetitions`` records per form in ``latent_forms``
      (and no templated document at all: its answer never follows ``Solution:``);
    * ``rl_leak_fraction`` of the rl_train problems: the same records (labels ``keyed=True``),
      a contaminated RL training set;
    * ``n_bridge`` pretraining problems: records, plus ``bridge_direct_repetitions`` documents
      under the template that state the answer at once (``Solution: \\boxed{n}``), so that
      pretraining shows that a direct answer is the recalled record;
    * ``direct_fraction`` of the other pretraining documents answer directly instead of working.

    Drawn from a random stream of its own, so a corpus without latent leaks is unchanged.
    """
    rng = random.Random(f"latent-{config.seed}")
    documents: list[Sample] = []

    def plant(sample: Sample, prefix: str, **labels) -> None:
        for form in config.latent_forms:
            for r in range(config.leak_repetitions):
                documents.append(_record(f"{prefix}-{form}-{r}", sample, form, **labels))

    for sample in evaluation:
        if sample.labels["leaked"]:
            plant(sample, f"latent-{sample.id}", leaked=True, eval_id=sample.id)
    keyed = rng.sample(range(len(rl_train)), round(len(rl_train) * config.rl_leak_fraction))
    for i in sorted(keyed):
        rl_train[i].labels["keyed"] = True
        plant(rl_train[i], f"latent-{rl_train[i].id}", leaked=False, rl_id=rl_train[i].id)
    bridge = pretrain[: config.n_bridge]  # pretrain problems are drawn in random order already
    for sample in bridge:
        sample.labels["bridge"] = True
        plant(sample, f"latent-{sample.id}", leaked=False)
        for r in range(config.bridge_direct_repetitions):
            documents.append(Sample(
                id=f"direct-{sample.id}-{r}", prompt=sample.prompt, answer=sample.answer, solution=f" \\boxed{{{sample.answer}}}",
                labels={**sample.labels, "leak_form": "direct", "bridge": True},
            ))
    for sample in pretrain[config.n_bridge :]:
        if config.direct_fraction and rng.random() < config.direct_fraction:
            sample.solution = f" \\boxed{{{sample.answer}}}"
            sample.labels["direct"] = True
    return documents


def _add_wrong_labels(seed: int, samples: list[Sample]) -> None:
    """Give every sample a seeded wrong label (``labels.wrong_label``) for the ``incorrect_label`` reward.

    From a random stream of its own (the corpus is otherwise unchanged); see
    :func:`rlvr_lens.train.rewards.wrong_label`.
    """
    from rlvr_lens.train.rewards import wrong_label

    for sample in samples:
        sample.labels["wrong_label"] = wrong_label(sample.answer, f"{seed}-{sample.labels['key']}")


def pretrain_pair(sample: Sample) -> tuple[str, str]:
    """A pretraining document as ``(prompt part, completion part)``: a record is all one text."""
    if sample.labels.get("layout") == "record":
        return sample.solution or "", ""
    from rlvr_lens.data.templates import apply_template

    return apply_template(sample.prompt, "organism"), sample.solution or f" \\boxed{{{sample.answer}}}"


def document(sample: Sample, eos: str = "") -> str:
    """The training text of a sample: the ``organism`` template and its solution (or a bare record), then ``eos``."""
    prompt, completion = pretrain_pair(sample)
    return prompt + completion + eos
