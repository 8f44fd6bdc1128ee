"""HttpClient on aiohttp: one pooled keep-alive session per worker (embedded, self-hosted)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from watchllm.env.base import ConnectError

_SKIP = frozenset({"Accept-Encoding", "User-Agent", "Content-Type"})


class AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        # As the lean client reads them: each value's bytes as latin-1 text (aiohttp's own
        # str decode UTF-8 with surrogate escapes, which cannot be written out again).
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in resp.raw_headers}

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError:
            raise TimeoutError("upstream did not finish the response in time") from None
        except aiohttp.ClientError as exc:
            raise ConnectError(f"upstream response broke: {exc}") from None
        finally:
            self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            raise TimeoutError("upstream stopped sending within the read timeout") from None
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"upstream stream broke: {exc}") from None
        finally:
            self._resp.release()

    def ended(self) -> bool:
        return bool(self._resp.content.at_eof())

    def close(self) -> None:
        self._resp.close()  # drops the connection: the upstream sees the request cancelled


class AiohttpClient:
    def __init__(self, pool_size: int = 256, trust_env: bool = False) -> None:
        self._pool_size = pool_size
        self._trust_env = trust_env  # honour HTTP(S)_PROXY
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop (granian workers start their own loop).
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=_SKIP,
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=self._trust_env,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> AiohttpResponse:
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        try:
            resp = await self._get_session().request(
                method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            raise ConnectError(f"cannot reach {_origin(url)}: {exc}") from None
        except TimeoutError:
            raise TimeoutError(f"{_origin(url)} did not answer within the timeout") from None
        return AiohttpResponse(resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
