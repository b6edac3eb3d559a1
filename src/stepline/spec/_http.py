"""The ``http`` step's form, and the URL and header checks it shares with webhook callbacks.

``{"http": {"url": U, "method": M, "headers": {..}, "json": J, "body": "text", "expect": [200]}}``

* ``method`` defaults to ``GET``, or ``POST`` when a ``json`` or ``body`` is given. ``json`` is
  sent as ``application/json``, encoded once here, at submit time, into the spec's ``content``;
  ``body`` is sent as text.
* ``expect`` lists the statuses that count as success (default: any 2xx).

Only the form lives here; sending the request is :mod:`stepline.engine._http`'s job. Parameters
are substituted and types checked by the step validator, as for every other kind, so messages
name their path (``steps[0].http.url``).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from .._errors import InvalidJob
from ._model import Http, Modifiers, Step

if TYPE_CHECKING:
    from ._fields import Fields

__all__ = ["check_url", "parse_headers", "parse_http"]

_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_KEYS: Final = frozenset(("url", "method", "headers", "json", "body", "expect"))


def parse_http(v: Fields, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    """The ``http`` step (registered in the validator's parser table)."""
    spec = v.resolve(raw["http"], path, "http")
    where = f"{path}.http" if path else "http"
    if type(spec) is not dict:
        if v.lenient(spec):
            return cast(Step, spec)
        raise InvalidJob(where, "expected an object with 'url' (and method, headers, json, ...)")
    check = v if spec is raw["http"] else v.literal
    for key in spec:
        if key not in _KEYS:
            raise InvalidJob(where, f"unknown key {str(key)[:40]!r} for an http step")
    if "url" not in spec:
        raise InvalidJob(where, "missing 'url'")
    if "json" in spec and "body" in spec:
        raise InvalidJob(where, "give at most one of 'json' and 'body'")
    url = check_url(check, check.string(spec["url"], where, "url", no_nul=True), where, "url")
    content, headers = _content(check, spec, where)
    return Http(
        path=path,
        mods=mods,
        url=url,
        method=_method(check, spec, where, content is not None),
        headers=headers,
        content=content,
        expect=_expect(check, spec["expect"], where) if "expect" in spec else None,
    )


def _method(v: Fields, spec: dict[str, Any], where: str, has_body: bool) -> str:
    if "method" not in spec:
        return "POST" if has_body else "GET"
    method = v.string(spec["method"], where, "method").upper()
    if method not in _METHODS and not v.lenient(method):
        raise InvalidJob(f"{where}.method", f"expected one of {', '.join(_METHODS)}")
    return method


def _content(v: Fields, spec: dict[str, Any], where: str) -> tuple[bytes | None, dict[str, str]]:
    """The encoded body and the headers, with a content type for ``json`` unless one is given."""
    headers = parse_headers(v, spec["headers"], where) if "headers" in spec else {}
    has_type = any(name.lower() == "content-type" for name in headers)
    if "json" in spec:
        value = v.json_field(spec["json"], where, "json")
        if not has_type:
            headers["content-type"] = "application/json"
        return orjson.dumps(value), headers
    if "body" in spec:
        return v.string(spec["body"], where, "body").encode(), headers
    return None, headers


def _expect(v: Fields, raw: object, where: str) -> tuple[int, ...]:
    value = v.resolve(raw, where, "expect")
    if type(value) is not list or not value:
        if v.lenient(value):
            return ()
        raise InvalidJob(f"{where}.expect", "expected a non-empty list of HTTP status codes")
    check = v if value is raw else v.literal
    codes = tuple(check.count(code, where, f"expect[{i}]", 100) for i, code in enumerate(value))
    for i, code in enumerate(codes):
        if code > 599:
            raise InvalidJob(f"{where}.expect[{i}]", f"not an HTTP status code: {code}")
    return codes


# -- shared with webhook callbacks ----------------------------------------------------------------


def check_url(v: Fields, url: str, path: str, key: str) -> str:
    """An absolute http(s) URL whose host can be looked up (a define-time placeholder passes)."""
    if v.lenient(url):
        return url
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidJob(_at(path, key), f"expected an http:// or https:// URL, got {url[:80]!r}")
    problem = _host_problem(url)
    if problem is not None:
        raise InvalidJob(_at(path, key), f"{problem} in {url[:80]!r}")
    return url


def _host_problem(url: str) -> str | None:
    """Why the URL's host could never be resolved, or None.

    The resolver encodes a name with the ``idna`` codec, which refuses an empty label
    (``a..b``) or one longer than 63 characters; found only when the request is sent, that
    was an error of no known type. Checked here with the same codec, so the job is refused at
    submit time instead.
    """
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed bracket
        return f"bad URL ({exc})"
    if not host:
        return "no host"
    if ":" in host:
        return None  # an IPv6 literal: never passed through the name codec
    try:
        host.encode("idna")
    except UnicodeError:
        return f"bad host name {host[:80]!r} (a label is empty or longer than 63 characters)"
    return None


def parse_headers(v: Fields, raw: object, path: str) -> dict[str, str]:
    """``headers``: an object of strings; values substituted; no CR/LF (header injection)."""
    value = v.resolve(raw, path, "headers")
    where = _at(path, "headers")
    if type(value) is not dict:
        if v.lenient(value):
            return {}
        raise InvalidJob(where, f"expected an object of strings, got {_kind(value)}")
    check = v if value is raw else v.literal
    headers: dict[str, str] = {}
    for name, item in value.items():
        if type(name) is not str or not name or any(c in name for c in "\r\n:\0 "):
            raise InvalidJob(where, f"bad header name {str(name)[:40]!r}")
        text = check.string(item, where, name)
        if any(c in text for c in "\r\n\0"):
            raise InvalidJob(_at(where, name), "a header value must not contain CR, LF or NUL")
        headers[name] = text
    return headers


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
