"""Cloudflare-specific behaviour of the adapters in CPython, through limit-enforcing fakes
(the shared contract suites in tests/contract/ run these adapters too)."""

from __future__ import annotations

import json

import pytest

from tests.cloudflare.fakes import (
    FakeBatch,
    FakeD1,
    FakeDurableObjectNamespace,
    FakeKV,
    FakeMessage,
    FakeQueue,
    FakeStatement,
    FakeVectorize,
    JsObject,
)
from tests.pipeline.helpers import make_event
from watchllm.env.cloudflare._js import JsException
from watchllm.env.cloudflare.consumer import backoff_s, consume
from watchllm.env.cloudflare.d1 import D1Database, D1Error
from watchllm.env.cloudflare.kv import MAX_VALUE_BYTES, ValueTooLarge, WorkersKeyValue, kv_ttl
from watchllm.env.cloudflare.limiter import DurableObjectCounters, shard
from watchllm.env.cloudflare.queues import QueuesEventQueue
from watchllm.env.cloudflare.vectorize import VectorizeIndex, VectorizeLimitError
from watchllm.limits.ops import GEN, GRANT, RATE, REFUND, Op


async def test_kv_ttl_is_clamped_to_60s_but_exact_on_read() -> None:
    fake = FakeKV()
    kv = WorkersKeyValue(fake)
    assert kv_ttl(0.05) == 60 and kv_ttl(61.2) == 62 and kv_ttl(None) is None
    await kv.set("k", b"v", ttl_s=1)  # the fake refuses expirationTtl < 60: clamped
    assert fake.data["k"][1] > 0
    assert await kv.get("k") == b"v"


async def test_kv_value_over_25_mib_is_refused_before_the_request() -> None:
    fake = FakeKV()
    with pytest.raises(ValueTooLarge, match="25 MiB"):
        await WorkersKeyValue(fake).set("big", b"x" * MAX_VALUE_BYTES)
    assert fake.writes == 0


async def test_kv_long_keys_are_hashed_under_512_bytes() -> None:
    kv = WorkersKeyValue(FakeKV())
    key = "wlc1:p:" + "n" * 700
    await kv.set(key, b"v")
    assert await kv.get(key) == b"v"
    assert await kv.delete_prefix("wlc1:p:") == 1


async def test_kv_lock_is_never_written_to_kv() -> None:
    fake = FakeKV()
    kv = WorkersKeyValue(fake)
    assert await kv.add("x:lock", b"1", 30)
    assert not await kv.add("x:lock", b"1", 30)
    assert fake.writes == 0
    assert await kv.delete("x:lock")


async def test_d1_results_are_converted_and_errors_carry_d1_text() -> None:
    db = D1Database(FakeD1())
    await db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, flag INTEGER, note TEXT)")
    await db.execute("INSERT INTO t VALUES (?, ?, ?)", ("a", True, None))
    assert await db.fetch_all("SELECT * FROM t") == [{"id": "a", "flag": 1, "note": None}]
    with pytest.raises(D1Error, match="UNIQUE"):
        await db.execute("INSERT INTO t VALUES (?, ?, ?)", ("a", 0, "dup"))


async def test_vectorize_limits_and_namespaces() -> None:
    fake = FakeVectorize(4)
    index = VectorizeIndex(fake)
    with pytest.raises(VectorizeLimitError, match="1536"):
        await index.add("ns", "a", [0.1] * 1537)
    with pytest.raises(VectorizeLimitError, match="10 KiB"):
        await index.add_many("ns", [("a", [1, 0, 0, 0], {"blob": "x" * 11_000})])
    await index.add_many("ns", [(f"id{i}", [1, i / 3000, 0, 0], None) for i in range(2500)])
    assert fake.upsert_calls == [1000, 1000, 500]
    await index.add("other", "id0", [1, 0, 0, 0])  # same id, other namespace: no clash
    hits = await index.search("ns", [1, 0, 0, 0], 3, 0.5)
    assert [h[0] for h in hits] == ["id0", "id1", "id2"]
    assert await index.search("ns", [0, 1, 0, 0], 150, 0.99) == []  # topK capped at 100
    assert await index.remove("ns", "id0") and not await index.remove("ns", "id0")
    assert [h[0] for h in await index.search("other", [1, 0, 0, 0], 5, 0.5)] == ["id0"]


async def test_queue_batches_respect_queues_limits() -> None:
    fq = FakeQueue()
    q = QueuesEventQueue(fq)
    for i in range(250):
        q.put(make_event(i, prompt="p" * 3000))
    q.put(make_event(999, prompt="x" * 300_000))  # shortened to fit 128 KB
    await q.flush()
    assert q.sent == 251 and q.dropped == 0 and len(fq.messages) == 251
    big = json.loads(fq.messages[-1]["body"])
    assert big["prompt"].endswith("[truncated]")


async def test_consumer_retries_with_backoff_and_dead_letters_poison() -> None:
    class Down:
        async def insert_rowbinary(self, *a: object, **kw: object) -> None:
            raise ConnectionError("ClickHouse down")

    good = FakeMessage("1", json.dumps(make_event(1)), attempts=3)
    not_json = FakeMessage("2", "{nope")
    bad_enum = FakeMessage("3", json.dumps({**make_event(2), "cache_status": "WAT"}))
    dlq = FakeQueue()
    report = await consume(FakeBatch([good, not_json, bad_enum]), Down(), dead_letter=dlq)
    assert good.outcome == "retry" and 30 <= (good.delay or 0) <= 40
    assert not_json.outcome == "ack" and bad_enum.outcome == "ack"
    assert report.dead_lettered == 2 and len(dlq.messages) == 2
    assert backoff_s(100) <= 900


async def test_durable_object_counters_shard_by_project_and_survive_eviction() -> None:
    ns = FakeDurableObjectNamespace()
    counters = DurableObjectCounters(ns)
    key = "wl:{proj_1}:rpm"
    assert shard(key) == "proj_1" and shard("plain") == ""
    ops = [Op(RATE, key, 2, 60_000)]
    assert [(await counters.apply(ops, 1_000)).allowed for _ in range(3)] == [True, True, False]
    ns.objects["id:proj_1"].evict()  # memory lost, storage kept
    assert not (await counters.apply(ops, 1_000)).allowed
    assert list(ns.objects) == ["id:proj_1"]


def test_limiter_state_round_trips_and_drops_an_unreadable_bucket() -> None:
    """The object's stored state loads back bucket for bucket; one unreadable bucket (a
    hand edit, an older format) restarts empty instead of failing the object."""
    import json

    from watchllm.env.cloudflare.limiter import LimiterState

    state = LimiterState()
    state.limiter.rates["wl:{p}:rpm"] = (2_000, 5, 60)
    state.limiter.rates["wl:{p}:tpm"] = (3_000, 0, 1_000)
    stored = json.loads(state.dump())
    again = LimiterState()
    again.load(json.dumps(stored))
    assert again.limiter.rates.to_dict() == state.limiter.rates.to_dict()
    stored["rate"]["wl:{p}:tpm"] = [3_000, 0]  # unreadable
    again = LimiterState()
    again.load(json.dumps(stored))
    assert again.limiter.rates.to_dict() == {"wl:{p}:rpm": (2_000, 5, 60)}


async def test_a_refund_after_eviction_still_sees_what_others_charged() -> None:
    """The charge count C is stored with the bucket: after an eviction, a prefetch's
    REFUND gives back only what is still its own (ops.py, REFUND)."""
    ns = FakeDurableObjectNamespace()
    counters = DurableObjectCounters(ns)
    key = "wl:{proj_2}:rpm"
    grant = await counters.apply([Op(RATE, key, 600, 60_000, 50, GRANT),
                                  Op(RATE, key, 600, 60_000, 0, GEN)], 1_000)
    res, gen = grant.results
    member = f"1000:{res.retry_ms}:{res.reset_ms * 600 - 50 * 60_000}:{gen.retry_ms}:0"
    ns.objects["id:proj_2"].evict()  # memory lost, storage kept
    await counters.apply([Op(RATE, key, 600, 60_000, 60)], 1_500)  # another worker: 60
    back = await counters.apply([Op(RATE, key, 600, 60_000, -50, REFUND, member)], 1_500)
    # 50 + 60 charged, 5 drained by t=1.5 s: 45 of the grant are still in the bucket
    assert back.results[0].retry_ms == 45
    assert back.results[0].remaining == 600 - 60


class _FlakyD1(FakeD1):
    """Fails the first `failures` statements with D1's transient network error."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def prepare(self, sql: str) -> FakeStatement:
        stmt = super().prepare(sql)
        if self.failures:
            self.failures -= 1

            async def broken() -> JsObject:
                raise JsException("D1_ERROR: Network connection lost.")

            stmt.run = stmt.all = broken  # type: ignore[method-assign]
        return stmt


async def test_d1_retries_reads_not_writes_on_transient_errors() -> None:
    flaky = _FlakyD1(failures=2)
    db = D1Database(flaky)
    assert await db.fetch_all("SELECT 1 AS one") == [{"one": 1}]  # third try succeeds
    flaky.failures = 3
    with pytest.raises(D1Error, match="Network connection lost"):
        await db.fetch_all("SELECT 1 AS one")  # two retries, then the error
    flaky.failures = 1
    with pytest.raises(D1Error, match="Network connection lost"):
        await db.execute("CREATE TABLE t (a INTEGER)")  # a write is never retried
