"""Test stand-in for the Workers runtime's compatibility-flag module (all flags off)."""

python_workflows_implicit_dependencies = False
python_request_headers_preserve_commas = False


def __getattr__(name: str) -> bool:
    return False
