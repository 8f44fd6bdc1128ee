"""Entry points: the only code, with watchllm/env/, that knows which runtime it is on."""
