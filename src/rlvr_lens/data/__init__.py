"""Samples, readers, prompt templates, answer extraction and grading."""

from rlvr_lens.data.grading import Grade, extract_answer, grade, is_correct
from rlvr_lens.data.readers import (
    ReadReport,
    parse_field_map,
    read_samples,
    read_samples_report,
    write_samples,
)
from rlvr_lens.data.sample import Sample, label_groups
from rlvr_lens.data.templates import TEMPLATES, apply_template

__all__ = [
    "TEMPLATES",
    "Grade",
    "ReadReport",
    "Sample",
    "apply_template",
    "extract_answer",
    "grade",
    "is_correct",
    "label_groups",
    "parse_field_map",
    "read_samples",
    "read_samples_report",
    "write_samples",
]
