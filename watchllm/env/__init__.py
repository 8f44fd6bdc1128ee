"""Runtime adapters behind the seams in `base.py`; see docs/design.md."""
