"""HTTP to OpenSearch for the search sink: botocore's HTTP session, orjson bodies.

The transport is the one the worker's AWS clients already use: botocore's
``URLLib3Session`` (urllib3 connection pools, TLS, proxies), so one HTTP stack
serves every sink and a shard process loads no second one (opensearch-py and
requests cost a shard process about 60 ms of imports and 7 MiB). Requests for
Amazon OpenSearch Service (``es``) and Serverless (``aoss``) are signed with
botocore's ``SigV4Auth``, with the ``X-Amz-Content-SHA256`` payload hash that
Serverless requires. The bodies stay the sink's own: the five endpoints it
needs (``_bulk``, ``_mget``, index creation, refresh, scroll) take bytes the sink
already encoded with orjson (bulk NDJSON is built once per chunk, never
re-serialized), and responses are parsed with orjson. Every status comes back
to :meth:`SearchClient.request`, which maps it to one action.

Proxies and CAs as boto3 has them (see :func:`http_settings`): ``HTTP_PROXY`` /
``HTTPS_PROXY`` / ``NO_PROXY`` from the environment (botocore's own reading of
them); the CA bundle from ``search.ca_certs`` (or ``verify_tls = false``), else
``AWS_CA_BUNDLE``, else ``REQUESTS_CA_BUNDLE``, else the default bundle.

Errors, each with one action (see :mod:`worker.errors`):

* connection errors, timeouts, TLS failures, HTTP 429 and 5xx →
  :class:`RetryableError` (``retry_after`` from the ``Retry-After`` header);
* HTTP 413 on a bulk request → :class:`RequestTooLarge` (the sink splits it);
* other unexpected statuses (401, 403, 404 on an index, ...) →
  :class:`FatalError`: retrying cannot help and nothing may be acknowledged.

Per-item bulk results are returned as they are; the sink classifies them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError
from botocore.httpsession import URLLib3Session
from botocore.utils import get_environ_proxies
from urllib3.exceptions import InsecureRequestWarning

from worker.config import SearchSection
from worker.errors import ConfigError, FatalError, RetryableError

NDJSON = "application/x-ndjson"
JSON = "application/json"

# Response trimming: the sink needs statuses and errors, not shard counts.
BULK_FILTER = "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by"
MGET_FILTER = "docs._id,docs.found,docs._seq_no,docs._primary_term,docs._source,docs.error"


class RequestTooLarge(RetryableError):
    """HTTP 413: the request exceeds the cluster's (or service's) size limit."""


class SearchClient:
    """The endpoints the search sink uses, against one base URL.

    ``settings`` (from :func:`http_settings`) carry authentication and TLS; requests go
    through :attr:`connection` (a :class:`Connection`, the seam tests put faults in).
    ``calls`` counts requests by endpoint (benchmarks and tests read it).
    """

    def __init__(self, url: str, settings: HttpSettings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        self.url = url

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, url: str) -> None:
        """Point the client at another base URL (a new connection with the same settings)."""
        self._url = url.rstrip("/")
        self.connection = Connection(self._url, self.settings, self.timeout)

    # -- transport -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
        expect: Sequence[int] = (200, 201),
        what: str = "",
    ) -> tuple[int, Any]:
        """Send one request; returns ``(status, parsed body)`` for statuses in ``expect``."""
        what = what or f"{method} {path}"
        self.calls[what.split(" ", 1)[0]] += 1
        status, headers, content = self.send(method, path, body, params=params, content_type=content_type, what=what)
        if status in expect:
            return status, (orjson.loads(content) if content else None)
        detail = _error_text(content)
        if status == 413:
            raise RequestTooLarge(f"search: {what}: 413 request too large ({len(body or b'')} bytes)")
        if status == 429 or status >= 500:
            raise RetryableError(f"search: {what}: {status} {detail}", retry_after=_retry_after(headers))
        raise FatalError(f"search: {what}: {status} {detail}")

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        params: Mapping[str, str] | None,
        content_type: str,
        what: str,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One exchange through the connection: ``(status, headers, body)``, any status."""
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            return self.connection.perform_request(method, path, params, body, headers)
        except (BotoConnectionError, HTTPClientError) as exc:  # refused, TLS, proxy; reset, timeouts
            raise RetryableError(f"search: {what}: {type(exc).__name__}: {exc}") from exc

    # -- endpoints -------------------------------------------------------------------

    def index_exists(self, index: str) -> bool:
        """True when ``index`` names an index or an alias."""
        status, _ = self.request("HEAD", f"/{_path(index)}", expect=(200, 404), what="exists")
        return status == 200

    def create_index(self, index: str, body: Mapping[str, Any]) -> bool:
        """Create ``index``; False when it already existed (another worker won the race)."""
        status, resp = self.request(
            "PUT", f"/{_path(index)}", orjson.dumps(body), expect=(200, 201, 400), what="create-index"
        )
        if status == 400:
            if _error_type(resp) == "resource_already_exists_exception":
                return False
            raise FatalError(f"search: creating index {index!r}: {_error_text(orjson.dumps(resp))}")
        return True

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        self.request("PUT", f"/_index_template/{_path(name)}", orjson.dumps(body), what="put-template")

    def mget(self, index: str, ids: Sequence[str], source_includes: str) -> list[dict[str, Any]]:
        """The current state of ``ids`` (in order): ``found``, ``_seq_no``, ``_primary_term``, ``_source``."""
        _, resp = self.request(
            "POST",
            f"/{_path(index)}/_mget",
            orjson.dumps({"ids": list(ids)}),
            params={"_source_includes": source_includes, "filter_path": MGET_FILTER},
            what="mget",
        )
        docs: list[dict[str, Any]] = (resp or {}).get("docs", [])
        if len(docs) != len(ids):
            raise FatalError(f"search: mget returned {len(docs)} documents for {len(ids)} ids")
        for doc in docs:
            err = doc.get("error")
            if err is not None:
                # index_not_found and friends: not a per-record problem; retrying may help
                # (an index being re-created), exhausted retries stop the worker.
                raise RetryableError(f"search: mget {index!r}: {_error_type(err)}: {_reason(err)}")
        return docs

    def bulk(self, index: str, body: bytes, actions: int) -> list[dict[str, Any]]:
        """Send NDJSON ``body`` of ``actions`` actions on ``index``; the per-item results, in order.

        Index-scoped (``POST <index>/_bulk``): the form OpenSearch Serverless and
        index-level access policies accept; action lines need no ``_index``.
        """
        _, resp = self.request(
            "POST",
            f"/{_path(index)}/_bulk",
            body,
            params={"filter_path": BULK_FILTER},
            content_type=NDJSON,
            what="bulk",
        )
        raw = (resp or {}).get("items", [])
        if len(raw) != actions:
            raise FatalError(f"search: bulk returned {len(raw)} results for {actions} actions")
        return [next(iter(item.values())) for item in raw]

    def refresh(self, index: str) -> None:
        self.request("POST", f"/{_path(index)}/_refresh", what="refresh")

    def scan(self, index: str, query: Mapping[str, Any], page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every hit of ``query`` (scroll in index order)."""
        body = orjson.dumps({"size": page, "sort": ["_doc"], "query": query})
        _, resp = self.request("POST", f"/{_path(index)}/_search", body, params={"scroll": "1m"}, what="search")
        scroll_id = resp.get("_scroll_id")
        try:
            while True:
                hits = resp["hits"]["hits"]
                yield from hits
                if len(hits) < page or not scroll_id:
                    return
                nxt = orjson.dumps({"scroll": "1m", "scroll_id": scroll_id})
                _, resp = self.request("POST", "/_search/scroll", nxt, what="scroll")
                scroll_id = resp.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                try:
                    self.request(
                        "DELETE", "/_search/scroll", orjson.dumps({"scroll_id": [scroll_id]}), expect=(200, 404)
                    )
                except RetryableError:
                    pass  # the scroll expires on its own

    def close(self) -> None:
        self.connection.close()


# -- construction -----------------------------------------------------------------------


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication."""

    username: str
    password: str

    def __call__(self, request: AWSRequest) -> None:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        request.headers["Authorization"] = f"Basic {token}"


@dataclass(frozen=True)
class SigV4:
    """AWS Signature Version 4 for ``service`` (``es`` or ``aoss``) in ``region``.

    ``credentials`` is a botocore credentials object; refreshable ones are frozen per
    request (a refresh never changes them halfway through a signature). The payload's
    SHA-256 goes in ``X-Amz-Content-SHA256`` (required by Serverless, accepted by ``es``)
    and is signed with the other headers.
    """

    credentials: Any
    region: str
    service: str

    def __call__(self, request: AWSRequest) -> None:
        body = request.body or b""  # bytes from this client; botocore types it str | bytes
        payload = body.encode() if isinstance(body, str) else body
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(payload).hexdigest()
        SigV4Auth(self.credentials.get_frozen_credentials(), self.service, self.region).add_auth(request)


@dataclass(frozen=True)
class HttpSettings:
    """How to reach the cluster: what to verify its certificate with, and how to authenticate."""

    verify: bool | str = True
    auth: Callable[[AWSRequest], None] | None = None


class Connection:
    """HTTP to one base URL over botocore's ``URLLib3Session``: pooled connections (8), the
    environment's proxies for that URL, ``settings``' TLS and authentication, ``timeout``
    seconds to connect and to read. No retries: the pipeline's retry policy owns them."""

    def __init__(self, base: str, settings: HttpSettings, timeout: float) -> None:
        self.base = base
        self.timeout = timeout
        self.auth = settings.auth
        if settings.verify is False:
            # The configuration says so (verify_tls = false): urllib3 would warn on every request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        # botocore takes a CA bundle path for ``verify`` and a float ``timeout`` (its stubs say
        # bool and int): botocore.httpsession._setup_ssl_cert, and urllib3's Timeout.
        self.http = URLLib3Session(
            verify=settings.verify,  # type: ignore[arg-type]
            proxies=get_environ_proxies(base),
            timeout=timeout,  # type: ignore[arg-type]
            max_pool_connections=8,
            # What botocore's own clients set: its connection sends a request's headers and
            # body as two writes, and with Nagle's algorithm on the body would wait for the
            # server's delayed ACK (40 ms a request, measured against osmem-server).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # type: ignore[list-item]
        )

    def perform_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One exchange: ``(status, headers, body)`` whatever the status; botocore's
        ``ConnectionError`` or ``HTTPClientError`` when no answer came."""
        url = f"{self.base}{path}{query_string(params)}"
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        if self.auth is not None:
            self.auth(request)
        response = self.http.send(request.prepare())
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        self.http.close()


def query_string(params: Mapping[str, str] | None) -> str:
    """``?k=v&...`` for ``params`` (empty for none), encoded as SigV4's canonical query string has
    it (RFC 3986), so a signature covers the very text sent."""
    return f"?{urlencode(params, quote_via=quote, safe='-_.~')}" if params else ""


def tls_verify(section: SearchSection, environ: Mapping[str, str] = os.environ) -> bool | str:
    """What to verify the server's certificate with, in boto3's order: the configuration
    (``ca_certs``, or ``verify_tls = false``), ``AWS_CA_BUNDLE``, ``REQUESTS_CA_BUNDLE``,
    else the default bundle (``True``)."""
    if section.ca_certs:
        return section.ca_certs
    if not section.verify_tls:
        return False
    return environ.get("AWS_CA_BUNDLE") or environ.get("REQUESTS_CA_BUNDLE") or True


def split_url(url: str) -> tuple[str, str, str]:
    """``https://user:pass@host:9200/`` → (``https://host:9200``, user, password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("search.url", f"must be an http(s) URL, got {url!r}")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return base, unquote(parts.username or ""), unquote(parts.password or "")


def http_settings(section: SearchSection, region: str, *, credentials: Any = None) -> tuple[str, HttpSettings]:
    """The base URL and the HTTP settings for ``section``.

    ``auth = "none"`` still honours credentials in the URL (basic auth).
    ``sigv4`` signs with the default credential chain (:func:`worker.aws.credentials`) unless
    ``credentials`` (a botocore credentials object) is given.
    """
    base, url_user, url_password = split_url(section.url)
    auth: Callable[[AWSRequest], None] | None = None
    if section.auth == "basic":
        auth = BasicAuth(section.username, section.password)
    elif section.auth == "sigv4":
        if credentials is None:
            from worker.aws import credentials as default_credentials

            credentials = default_credentials()
        if credentials is None:
            raise ConfigError("search.auth", "sigv4 needs AWS credentials and none were found")
        auth = SigV4(credentials, section.region or region, section.sigv4_service)
    elif url_user:
        auth = BasicAuth(url_user, url_password)
    return base, HttpSettings(tls_verify(section), auth)


def connect(section: SearchSection, region: str, *, credentials: Any = None) -> SearchClient:
    """A client for ``section`` (its URL, authentication, TLS and timeout)."""
    base, settings = http_settings(section, region, credentials=credentials)
    return SearchClient(base, settings, timeout=section.timeout_seconds)


def _path(name: str) -> str:
    return quote(name, safe="")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _error_text(content: bytes) -> str:
    try:
        obj = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")[:300]
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        return f"{err.get('type')}: {err.get('reason')}"
    return str(err)[:300]


def _error_type(obj: Any) -> str:
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("type", ""))
    return ""


def _reason(err: Any) -> str:
    return str(err.get("reason", "")) if isinstance(err, dict) else str(err)
