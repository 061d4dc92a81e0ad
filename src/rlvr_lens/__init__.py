"""rlvr-lens: what did RL with verifiable rewards change inside a language model?

The package is layered left to right (see ``docs/architecture.md``)::

    checkpoints -> models/ -> analyses/* -> typed results (JSON) -> report/ (HTML + PNG)
    datasets    -> data/  -'
"""

__version__ = "0.1.0"
