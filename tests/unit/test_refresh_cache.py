"""metadata/refresh.py: one read per key at expiry, reloads ahead of it, never a value
past its TTL; and through Authenticator on a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from watchllm.auth import Authenticator
from watchllm.env.embedded.sqlite import SqliteDatabase
from watchllm.errors import AuthenticationError
from watchllm.metadata import refresh
from watchllm.metadata.migrate import migrate
from watchllm.metadata.refresh import RefreshingCache
from watchllm.metadata.store import ApiKey, MetadataStore
from watchllm.settings import load_settings


class Source:
    """A store stand-in whose reads take `delay_s` and return the current `value`."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.value: Any = {"v": 1}
        self.delay_s = delay_s
        self.reads = 0
        self.fail = False

    async def load(self, key: str) -> Any:
        self.reads += 1
        value, fail = dict(self.value), self.fail  # as the store was when the read began
        await asyncio.sleep(self.delay_s)
        if fail:
            raise ConnectionError("store down")
        return value


async def test_concurrent_misses_read_once() -> None:
    src = Source()
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=60)
    got = await asyncio.gather(*(cache.get("k") for _ in range(50)))
    assert src.reads == 1 and all(g is got[0] for g in got)


async def test_reload_ahead_serves_at_once_and_keeps_identity() -> None:
    src = Source()
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=0.5)
    first = await cache.get("k")
    await asyncio.sleep(0.5 * refresh.REFRESH_AT + 0.02)
    t0 = time.monotonic()
    same = await asyncio.gather(*(cache.get("k") for _ in range(20)))
    assert time.monotonic() - t0 < src.delay_s  # nobody waited for the store
    assert all(s is first for s in same) and src.reads == 2  # one reload for all of them
    await asyncio.sleep(src.delay_s * 3)
    assert cache.peek("k") is first  # reloaded, unchanged: the same object
    assert cache.entries["k"][2] > time.monotonic() + 0.3  # and good for a new TTL
    src.value = {"v": 2}
    await asyncio.sleep(0.5 * refresh.REFRESH_AT)
    assert cache.peek("k") is first  # due: starts the reload, still serves the old value
    await asyncio.sleep(src.delay_s * 3)
    assert cache.peek("k") == {"v": 2}


async def test_never_served_past_its_ttl() -> None:
    src = Source(delay_s=0.05)
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=0.2)
    await cache.get("k")
    src.value = {"v": 2}
    await asyncio.sleep(0.25)  # expired, no reload ran (nothing asked in the window)
    assert cache.peek("k") is None
    assert await cache.get("k") == {"v": 2}  # waits for the read


async def test_forget_drops_a_read_in_flight() -> None:
    src = Source(delay_s=0.05)
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=60)
    pending = asyncio.ensure_future(cache.get("k"))
    await asyncio.sleep(0.01)
    src.value = {"v": 2}  # changed, and forgotten, while the first read is on its way
    cache.forget("k")
    assert await cache.get("k") == {"v": 2}
    assert await pending == {"v": 1}  # its caller gets its answer...
    assert cache.peek("k") == {"v": 2}  # ...which is not stored over the newer one


async def test_failures() -> None:
    src = Source()
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=0.3)
    src.fail = True
    results = await asyncio.gather(*(cache.get("k") for _ in range(5)), return_exceptions=True)
    assert src.reads == 1 and all(isinstance(r, ConnectionError) for r in results)
    src.fail = False
    value = await cache.get("k")  # a failed read is not cached
    src.fail = True
    await asyncio.sleep(0.3 * refresh.REFRESH_AT + 0.01)
    assert await cache.get("k") is value  # the background reload fails: the value serves...
    await asyncio.sleep(0.3)
    with pytest.raises(ConnectionError):  # ...until its TTL, not after
        await cache.get("k")


async def test_a_cancelled_waiter_does_not_cancel_the_read() -> None:
    src = Source(delay_s=0.05)
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=60)
    first = asyncio.ensure_future(cache.get("k"))
    second = asyncio.ensure_future(cache.get("k"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == {"v": 1} and src.reads == 1


async def test_a_lost_shared_read_is_not_waited_on_forever(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Cloudflare may drop the work of a finished request: a later waiter reads itself."""
    monkeypatch.setattr(refresh, "SHARED_WAIT_S", 0.05)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls = 0

    async def load(key: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never  # a read that never ends
        return {"v": 1}

    cache: RefreshingCache[str, Any] = RefreshingCache(load, ttl_s=60)
    hung = asyncio.ensure_future(cache.get("k"))
    await asyncio.sleep(0)
    assert await cache.get("k") == {"v": 1} and calls == 2  # gave up after SHARED_WAIT_S
    assert await hung == {"v": 1}  # the first waiter too, on the same new read
    calls = 0
    cache.forget("k")
    cache._start("k")  # lost again, and older than SHARED_WAIT_S: not waited on at all
    await asyncio.sleep(0.06)
    t0 = time.monotonic()
    assert await cache.get("k") == {"v": 1} and time.monotonic() - t0 < 0.04
    never.cancel()


def test_peek_without_an_event_loop() -> None:
    """A synchronous caller gets the value; the reload ahead waits for an async one."""
    cache: RefreshingCache[str, Any] = RefreshingCache(Source().load, ttl_s=0.2)
    asyncio.run(cache.get("k"))
    time.sleep(0.2 * refresh.REFRESH_AT + 0.01)
    assert cache.peek("k") == {"v": 1}


class CountingStore(MetadataStore):
    reads = 0

    async def get_key(self, key_id: str) -> Any:
        self.reads += 1
        await asyncio.sleep(0.005)  # the read is in flight while the others arrive
        return await super().get_key(key_id)


async def keyed(tmp_path: Path, store_type: type[MetadataStore], ttl: str
                ) -> tuple[SqliteDatabase, Any, ApiKey, str, Authenticator]:
    """A real SQLite store of `store_type` holding one key, and an Authenticator on it."""
    db = SqliteDatabase(tmp_path / "k.db")
    await migrate(db)
    store = store_type(db)
    project = await store.create_project("app")
    record, key = await store.create_key(project.id, "ci", ("proxy",))
    auth = Authenticator(store, load_settings({"WATCHLLM_KEY_CACHE_TTL": ttl}, None))
    return db, store, record, key, auth


async def test_authenticator_one_read_per_key_and_revocation_within_ttl(tmp_path: Path
                                                                        ) -> None:
    db, store, record, key, auth = await keyed(tmp_path, CountingStore, "0.5")
    got = await asyncio.gather(*(auth.authenticate(key, "proxy") for _ in range(50)))
    assert store.reads == 1 and all(p is got[0] for p in got)
    # In the last fifth of the TTL the record is read again in the background: no waiting,
    # the same principal (the remembered-hit path compares it by identity).
    await asyncio.sleep(0.5 * refresh.REFRESH_AT + 0.02)
    again = await asyncio.gather(*(auth.authenticate(key, "proxy") for _ in range(50)))
    assert all(p is got[0] for p in again)
    await asyncio.sleep(0.05)
    assert store.reads == 2
    await asyncio.sleep(0.25)  # past the first read's TTL: still the same principal
    assert await auth.authenticate(key, "proxy") is got[0] and auth.cached(key) is got[0]
    await store.revoke_key(record.id)  # elsewhere: this worker is not told
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2:
        try:
            await auth.authenticate(key, "proxy")
        except AuthenticationError as exc:
            assert "revoked" in exc.message
            break
        await asyncio.sleep(0.01)
    assert time.monotonic() - t0 <= 0.5 + 0.05  # within the TTL
    await db.close()


async def test_a_replaced_read_never_stores_an_older_answer(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(refresh, "SHARED_WAIT_S", 0.05)
    release = asyncio.Event()
    answers = iter([{"v": "old"}, {"v": "new"}])

    async def load(key: str) -> Any:
        answer = next(answers)
        if answer["v"] == "old":
            await release.wait()  # slow: given up on, then replaced
        return answer

    cache: RefreshingCache[str, Any] = RefreshingCache(load, ttl_s=60)
    first = asyncio.ensure_future(cache.get("k"))
    await asyncio.sleep(0.07)
    assert await cache.get("k") == {"v": "new"}  # the replacement read
    release.set()
    await asyncio.sleep(0.01)  # the old read ends after the new one was stored
    assert cache.peek("k") == {"v": "new"}
    assert await first == {"v": "new"}  # its waiter moved to the replacement too


async def test_a_ttl_of_0_reads_every_time() -> None:
    src = Source()
    cache: RefreshingCache[str, Any] = RefreshingCache(src.load, ttl_s=0)
    await asyncio.gather(*(cache.get("k") for _ in range(5)))
    assert src.reads == 5 and cache.peek("k") is None


class SlowFirstRead(MetadataStore):
    """get_key: the first read sees the store as it was, and returns only when released."""

    release: asyncio.Event

    async def get_key(self, key_id: str) -> Any:
        if not hasattr(self, "release"):
            self.release = asyncio.Event()
            record = await super().get_key(key_id)
            await self.release.wait()
            return record
        return await super().get_key(key_id)


async def test_a_revoke_here_is_not_undone_by_a_read_begun_before_it(tmp_path: Path) -> None:
    db, store, record, key, auth = await keyed(tmp_path, SlowFirstRead, "5")
    before = asyncio.ensure_future(auth.authenticate(key, "proxy"))  # reads the active key
    await asyncio.sleep(0.01)
    await store.revoke_key(record.id)  # through this worker: forgotten at once
    auth.forget(record.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(key, "proxy")
    store.release.set()
    await before  # in flight before the revoke: answered with what it read...
    with pytest.raises(AuthenticationError, match="revoked"):  # ...and not kept
        await auth.authenticate(key, "proxy")
    assert auth.cached(key) is None
    await db.close()
