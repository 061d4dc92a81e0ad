"""Read samples from JSONL, Parquet or a ``datasets`` data set saved to disk.

Column names differ between data sets; a *field map* says which column holds what.
Known layouts are detected automatically:

* native: ``id, prompt, answer, solution, labels``
* MATH / MATH-500: ``problem, solution, answer`` (+ ``unique_id, subject, level``)
* MATH without an answer column: ``problem`` (or ``question`` / ``prompt``) and
  ``solution``; the answer is the solution's last ``\\boxed{}``
* GSM8K: ``question, answer`` where ``answer`` is the worked solution ending ``#### n``

The id column, unless a field map names one, is the first of :data:`ID_COLUMNS` present
(``id``, ``unique_id``, ``idx``, ...); rows without one are ``row-N``.

A malformed row (bad UTF-8, not JSON, not an object, a required field missing or empty,
a solution-only row whose solution has no box) is skipped and reported with its line
number; the rest of the file is still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr_lens.data.grading import last_boxed
from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError

LAYOUTS: dict[str, dict[str, str]] = {
    "native": {"id": "id", "prompt": "prompt", "answer": "answer", "solution": "solution", "labels": "labels"},
    "math": {"id": "unique_id", "prompt": "problem", "answer": "answer", "solution": "solution"},
    "gsm8k": {"prompt": "question", "solution": "answer"},
    "math_solution": {"prompt": "problem", "solution": "solution"},
}
#: Columns taken as the sample id, in this order of preference (when no field map names one).
ID_COLUMNS = ("id", "unique_id", "idx", "uid", "problem_id", "question_id", "qid", "task_id", "example_id", "index")
_PROMPT_COLUMNS = ("problem", "question", "prompt")
_MATH_LABELS = ("subject", "level")


@dataclass
class ReadReport:
    """What happened while reading a file: samples read and rows skipped (with reasons)."""

    path: str
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        text = f"read {len(self.samples)} samples from {self.path}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} malformed rows ({'; '.join(self.skipped[:3])}"
            text += ", ...)" if len(self.skipped) > 3 else ")"
        return text


def detect_layout(columns: Iterable[str]) -> str:
    """Name of the known layout (a key of :data:`LAYOUTS`) that ``columns`` match."""
    columns = set(columns)
    if {"prompt", "answer"} <= columns:
        return "native"
    if {"problem", "answer"} <= columns:
        return "math"
    if {"question", "answer"} <= columns:
        return "gsm8k"
    if "solution" in columns and columns & set(_PROMPT_COLUMNS):
        return "math_solution"
    raise UserError(
        f"Cannot tell which columns hold the prompt and answer (found: {', '.join(sorted(columns))}); "
        "pass a field map such as prompt=question,answer=final."
    )


def parse_field_map(text: str | None) -> dict[str, str] | None:
    """Parse ``prompt=question,answer=final`` into ``{"prompt": "question", "answer": "final"}``."""
    if not text:
        return None
    mapping = {}
    for item in text.split(","):
        key, sep, column = item.partition("=")
        if not sep or key.strip() not in {"id", "prompt", "answer", "solution", "labels"}:
            raise UserError(f"Cannot read field map entry {item!r}; use e.g. prompt=question,answer=final.")
        mapping[key.strip()] = column.strip()
    return mapping


def gsm8k_final_answer(solution: str) -> str | None:
    """The number after ``####`` in a GSM8K solution (commas removed)."""
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def layout_field_map(layout: str, columns: Iterable[str]) -> dict[str, str]:
    """The field map of ``layout`` for a file with ``columns`` (its prompt and id columns found)."""
    columns = set(columns)
    mapping = dict(LAYOUTS[layout])
    if layout == "math_solution":
        mapping["prompt"] = next(c for c in _PROMPT_COLUMNS if c in columns)
    if mapping.get("id") not in columns:
        mapping.pop("id", None)
        found = next((c for c in ID_COLUMNS if c in columns), None)
        if found is not None:
            mapping["id"] = found
    return mapping


def row_to_sample(row: dict[str, Any], index: int, field_map: dict[str, str], layout: str) -> Sample:
    """Build a :class:`Sample` from one row; raises ``ValueError`` with the reason if malformed."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    prompt = row.get(field_map.get("prompt", "prompt"))
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"missing or empty '{field_map.get('prompt', 'prompt')}'")
    solution_col = field_map.get("solution")
    solution = row.get(solution_col) if solution_col else None
    if solution is not None and not isinstance(solution, str):
        solution = str(solution)
    answer_col = field_map.get("answer")
    answer = row.get(answer_col) if answer_col else None
    if answer is None and layout == "gsm8k" and solution:
        answer = gsm8k_final_answer(solution)
    if answer is None and answer_col is None and solution:  # MATH-style: the solution's last box
        answer = last_boxed(solution)
        if answer is None:
            raise ValueError(f"no answer column and no \\boxed{{}} answer in '{solution_col}'")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"missing or empty '{answer_col or 'answer'}'")
    labels = row.get(field_map.get("labels", "labels")) or {}
    if not isinstance(labels, dict):
        raise ValueError("'labels' is not an object")
    labels = dict(labels)
    if layout in {"math", "math_solution"}:
        labels.update({k: row[k] for k in _MATH_LABELS if k in row})
    id_col = field_map.get("id")
    sample_id = row.get(id_col) if id_col else None
    return Sample(
        id=str(sample_id) if sample_id is not None else f"row-{index}",
        prompt=prompt,
        answer=str(answer).strip(),
        solution=solution,
        labels=labels,
    )


def _rows_jsonl(path: Path, skipped: list[str]) -> Iterable[tuple[int, Any]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as error:
                skipped.append(f"line {line_no}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as error:
                skipped.append(f"line {line_no}: not valid JSON ({error.msg})")


def _rows_json(path: Path, skipped: list[str]) -> list[tuple[int, Any]]:
    """Rows of a ``.json`` file: a JSON array of objects (numbered from 1), or JSON lines."""
    try:
        whole = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return list(_rows_jsonl(path, skipped))  # JSON lines under a .json name
    if isinstance(whole, list):
        return list(enumerate(whole, start=1))
    if isinstance(whole, dict):
        lists = [k for k, v in whole.items() if isinstance(v, list)]
        hint = f" (its key {lists[0]!r} holds a list: save that list alone)" if lists else ""
        raise UserError(f"{path} holds one JSON object, not a list of samples{hint}; use a JSON array or JSON lines.")
    raise UserError(f"{path} holds a single JSON {type(whole).__name__}, not a list of samples.")


def _rows_table(path: Path) -> Iterable[tuple[int, Any]]:
    if path.is_dir():
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets is a dependency
            raise UserError("Reading a saved data set needs the 'datasets' package.") from None
        try:
            data = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise UserError(f"{path} is not a data set saved with datasets' save_to_disk ({error}).") from None
        if isinstance(data, datasets.DatasetDict):
            split = "test" if "test" in data else next(iter(data))
            data = data[split]
        rows = data.to_list()
    else:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for a bad file
            raise UserError(f"{path} is not a readable Parquet file ({error}).") from None
    return enumerate(rows, start=1)


def read_samples_report(
    path: str | os.PathLike, field_map: dict[str, str] | None = None, *, limit: int | None = None
) -> ReadReport:
    """Read samples and report skipped rows. See :func:`read_samples`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"No data file at {path}.")
    skipped: list[str] = []
    if path.suffix == ".jsonl" and path.is_file():
        rows = list(_rows_jsonl(path, skipped))
        row_kind = "line"
    elif path.suffix == ".json" and path.is_file():
        rows = _rows_json(path, skipped)
        row_kind = "row"
    elif path.suffix == ".parquet" or path.is_dir():
        rows = list(_rows_table(path))
        row_kind = "row"
    else:
        raise UserError(f"Cannot read {path}: use a .jsonl or .parquet file, or a directory saved by datasets.")
    if not rows and not skipped:
        raise UserError(f"{path} holds no rows.")
    if not rows:
        raise UserError(f"No usable rows in {path}: {skipped[0]}.")
    columns = next((r.keys() for _, r in rows if isinstance(r, dict)), None)
    if columns is None and not field_map:
        kind = type(rows[0][1]).__name__
        raise UserError(f"{path} holds no JSON objects (its rows are {kind}s); each sample must be an object such as "
                        '{"prompt": ..., "answer": ...}.')
    columns = columns or []
    if field_map:
        layout = "custom"
        mapping = dict(field_map)
        if "id" not in mapping and (found := next((c for c in ID_COLUMNS if c in columns), None)):
            mapping["id"] = found
    else:
        layout = detect_layout(columns)
        mapping = layout_field_map(layout, columns)
    samples: list[Sample] = []
    for number, row in rows:
        try:
            samples.append(row_to_sample(row, number, mapping, layout))
        except ValueError as error:
            skipped.append(f"{row_kind} {number}: {error}")
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise UserError(f"No usable rows in {path}: {skipped[0] if skipped else 'empty'}.")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path} has duplicate sample ids (e.g. {next(i for i in ids if ids.count(i) > 1)!r}).")
    return ReadReport(str(path), samples, skipped)


def read_samples(path: str | os.PathLike, field_map: dict[str, str] | None = None, *, limit: int | None = None) -> list[Sample]:
    """Read samples from a JSONL / Parquet file or a saved ``datasets`` directory.

    Malformed rows are skipped (use :func:`read_samples_report` to see which, with line
    numbers). Raises :class:`UserError` if the file is missing or has no usable row.
    """
    return read_samples_report(path, field_map, limit=limit).samples


def write_samples(path: str | os.PathLike, samples: list[Sample]) -> Path:
    """Write samples as native JSONL (atomically)."""
    from rlvr_lens.io import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(s.to_dict()) + "\n" for s in samples))
