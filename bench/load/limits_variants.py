"""The variants of the limits A/B (docs/performance.md), as JSON for bench/load/ab.py.

    .venv/bin/python bench/load/ab.py "$(python bench/load/limits_variants.py BEFORE_TREE)" \
        --kind passthrough --rounds 10 --seconds 2

BEFORE_TREE is a checkout of the older commit (`git archive <commit> | tar -x -C DIR`, plus
the built `watchllm/_core.abi3.so`); each gateway imports its tree through PYTHONPATH.
"""

import json
import sys
from pathlib import Path

after, before = str(Path(__file__).resolve().parents[2]), sys.argv[1]
limits = {"WATCHLLM_DEFAULT_RPM": "100000000", "WATCHLLM_DEFAULT_TPM": "1000000000"}
selfhosted = {"WATCHLLM_MODE": "self_hosted", "WATCHLLM_AUTO_MIGRATE": "true",
              "WATCHLLM_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/watchllm_bench",
              "WATCHLLM_REDIS_URL": "redis://127.0.0.1:6379/12"}
print(json.dumps({
    "embedded, no limits": {"PYTHONPATH": after},
    "embedded + limits (before)": {"PYTHONPATH": before, **limits},
    "embedded + limits (after)": {"PYTHONPATH": after, **limits},
    "self-hosted, no limits": {"PYTHONPATH": after, **selfhosted},
    "self-hosted + Redis limits (before)": {"PYTHONPATH": before, **selfhosted, **limits},
    "self-hosted + Redis limits (after)": {"PYTHONPATH": after, **selfhosted, **limits},
}))
