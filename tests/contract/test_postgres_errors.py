"""PostgreSQL-only behaviour: placeholder translation and the unreachable-server error."""

from __future__ import annotations

import pytest

from watchllm.env.selfhosted.postgres import PostgresDatabase, to_dollar
from watchllm.errors import ServiceUnavailableError


def test_placeholders_outside_literals_and_comments() -> None:
    sql = "SELECT '?', \"a?\", ? -- what?\n, ? /* ? */ FROM t WHERE x = 'it''s ?' AND y = ?"
    assert to_dollar(sql) == (
        "SELECT '?', \"a?\", $1 -- what?\n, $2 /* ? */ FROM t WHERE x = 'it''s ?' AND y = $3"
    )


async def test_unreachable_server_names_the_host_not_the_password() -> None:
    with pytest.raises(ServiceUnavailableError) as info:
        await PostgresDatabase.connect(
            "postgresql://bob:hunter2@127.0.0.1:1/app", connect_timeout_s=2
        )
    assert "127.0.0.1:1/app" in str(info.value) and "hunter2" not in str(info.value)
