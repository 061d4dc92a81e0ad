"""Entry point of a grading worker process (see :mod:`rlvr_lens.data.grading`)."""

import sys

from rlvr_lens.data.grading import serve_worker

if __name__ == "__main__":
    serve_worker(sys.stdin, sys.stdout)
