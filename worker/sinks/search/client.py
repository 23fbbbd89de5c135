"""HTTP to OpenSearch for the search sink: opensearch-py's connection, orjson bodies.

The transport is opensearch-py's :class:`~opensearchpy.RequestsHttpConnection`
(connection handling, TLS options, its SigV4 signer ``RequestsAWSV4SignerAuth``
for Amazon OpenSearch Service ``es`` and Serverless ``aoss``). The bodies stay
the sink's own: the five endpoints it needs (``_bulk``, ``_mget``, index
creation, refresh, scroll) take bytes the sink already encoded with orjson
(bulk NDJSON is built once per chunk, never re-serialized), and responses are
parsed with orjson. Every status comes back to :meth:`SearchClient.request`,
which maps it to one action.

Proxies and CAs as boto3 has them (see :func:`make_session`): ``HTTP_PROXY`` /
``HTTPS_PROXY`` / ``NO_PROXY`` from the environment; the CA bundle from
``search.ca_certs`` (or ``verify_tls = false``), else ``AWS_CA_BUNDLE``, else
``REQUESTS_CA_BUNDLE``, else the default bundle.

Errors, each with one action (see :mod:`worker.errors`):

* connection errors, timeouts, HTTP 429 and 5xx → :class:`RetryableError`
  (``retry_after`` from the ``Retry-After`` header);
* HTTP 413 on a bulk request → :class:`RequestTooLarge` (the sink splits it);
* other unexpected statuses (401, 403, 404 on an index, ...) →
  :class:`FatalError`: retrying cannot help and nothing may be acknowledged.

Per-item bulk results are returned as they are; the sink classifies them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson
import requests
from opensearchpy import RequestsHttpConnection
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import TransportError
from requests.adapters import HTTPAdapter

from worker.config import SearchSection
from worker.errors import ConfigError, FatalError, RetryableError

NDJSON = "application/x-ndjson"
JSON = "application/json"
EVERY_STATUS = range(100, 600)  # the connection returns them all; request() decides

# Response trimming: the sink needs statuses and errors, not shard counts.
BULK_FILTER = "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by"
MGET_FILTER = "docs._id,docs.found,docs._seq_no,docs._primary_term,docs._source,docs.error"


class RequestTooLarge(RetryableError):
    """HTTP 413: the request exceeds the cluster's (or service's) size limit."""


class SearchClient:
    """The endpoints the search sink uses, against one base URL.

    ``session`` (from :func:`make_session`) carries authentication, TLS and the
    environment's proxies; the opensearch-py connection sends through it.
    ``calls`` counts requests by endpoint (benchmarks and tests read it).
    """

    def __init__(self, url: str, session: requests.Session, *, timeout: float = 30.0) -> None:
        self.session = session
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        self.url = url

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, url: str) -> None:
        """Point the client at another base URL (a new connection through the same session)."""
        self._url = url.rstrip("/")
        self.connection = _connection(self._url, self.session, self.timeout)

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
    ) -> tuple[int, Mapping[str, str], str | bytes]:
        """One exchange through the opensearch-py connection: ``(status, headers, body)``, any status."""
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            status, resp_headers, data = self.connection.perform_request(
                method, path, params=params, body=body, headers=headers, ignore=EVERY_STATUS, timeout=self.timeout
            )
        except TransportConnectionError as exc:  # refused, reset, timeout, TLS
            raise RetryableError(f"search: {what}: {type(exc).__name__}: {exc.error}") from exc
        except TransportError as exc:
            raise FatalError(f"search: {what}: {exc}") from exc
        return status, resp_headers, data

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


class _Session(requests.Session):
    """A session whose own ``verify`` (chosen by :func:`make_session`) wins over
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, which requests would otherwise
    apply over it; proxies (``HTTP(S)_PROXY``, ``NO_PROXY``) still come from the
    environment."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify if verify is None else verify
        return settings


def tls_verify(section: SearchSection, environ: Mapping[str, str] = os.environ) -> bool | str:
    """What to verify the server's certificate with, in boto3's order: the configuration
    (``ca_certs``, or ``verify_tls = false``), ``AWS_CA_BUNDLE``, ``REQUESTS_CA_BUNDLE``,
    else the default bundle (``True``)."""
    if section.ca_certs:
        return section.ca_certs
    if not section.verify_tls:
        return False
    return environ.get("AWS_CA_BUNDLE") or environ.get("REQUESTS_CA_BUNDLE") or True


def _connection(base: str, session: requests.Session, timeout: float) -> RequestsHttpConnection:
    """opensearch-py's requests connection to ``base``, sending through ``session``."""
    # Every failed exchange is classified and reported by this client (retry or stop, with the
    # reason); opensearch-py's own per-request warning would repeat it with a urllib3 traceback.
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    parts = urlsplit(base)
    conn = RequestsHttpConnection(
        host=parts.hostname or "localhost",
        port=parts.port,
        use_ssl=parts.scheme == "https",
        url_prefix=parts.path,
        timeout=timeout,
        ssl_show_warn=False,
    )
    conn.session.close()
    conn.session = session
    return conn


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


def make_session(section: SearchSection, region: str, *, credentials: Any = None) -> tuple[str, requests.Session]:
    """The base URL and an authenticated session for ``section``.

    ``auth = "none"`` still honours credentials in the URL (basic auth).
    ``sigv4`` signs with the default credential chain (:func:`worker.aws.credentials`) unless
    ``credentials`` (a botocore credentials object) is given.
    """
    base, url_user, url_password = split_url(section.url)
    session = _Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=8, max_retries=0)  # retries: the pipeline's
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = tls_verify(section)
    if section.auth == "basic":
        session.auth = (section.username, section.password)
    elif section.auth == "sigv4":
        from opensearchpy import RequestsAWSV4SignerAuth

        if credentials is None:
            from worker.aws import credentials as default_credentials

            credentials = default_credentials()
        if credentials is None:
            raise ConfigError("search.auth", "sigv4 needs AWS credentials and none were found")
        session.auth = RequestsAWSV4SignerAuth(credentials, section.region or region, section.sigv4_service)
    elif url_user:
        session.auth = (url_user, url_password)
    return base, session


def _path(name: str) -> str:
    return quote(name, safe="")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _error_text(content: str | bytes) -> str:
    try:
        obj = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        text = content if isinstance(content, str) else content.decode("utf-8", "replace")
        return text[:300]
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
