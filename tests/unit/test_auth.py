"""Bearer-token matching (gradserve.rpc.auth) without a server: exact tokens only, the scheme,
every token compared, and what the interceptor lets through. The servers' side of it is in
tests/integration/test_security.py."""

from __future__ import annotations

import hmac
import io
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from gradserve.rpc import auth

TOKENS = [b"other-token", b"t0ken-1"]


def valid(*metadata: tuple[str, str | bytes]) -> bool:
    return auth.TokenAuthInterceptor(TOKENS)._valid(metadata)


@pytest.mark.parametrize("token", ["t0ken-1", "other-token", "  t0ken-1 "])
def test_each_token_of_the_file_is_accepted(token: str) -> None:
    assert valid(("authorization", f"Bearer {token}"))
    assert valid(("authorization", f"bearer {token}".encode()))  # scheme is case-insensitive


@pytest.mark.parametrize(
    "token",
    [
        "t0ken",  # a prefix
        "t",
        "0ken-1",  # a suffix
        "t0ken-1x",  # the token and more
        "xt0ken-1",
        "T0KEN-1",
        "t0ken-2",
        "",
        "other-token t0ken-1",
    ],
)
def test_anything_but_an_exact_token_is_refused(token: str) -> None:
    assert not valid(("authorization", f"Bearer {token}"))


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Basic t0ken-1"),),
        (("authorization", "t0ken-1"),),
        (("authorization", "Bearert0ken-1"),),
        (("x-authorization", "Bearer t0ken-1"),),
        (("authorization", "Bearer wrong"), ("authorization", "Bearer t0ken-1")),
    ],
    ids=["none", "basic", "no-scheme", "no-space", "other-key", "first-wins"],
)
def test_refused_metadata(metadata: tuple[tuple[str, str], ...]) -> None:
    assert not valid(*metadata)


def test_other_metadata_before_the_token_is_skipped() -> None:
    assert valid(("user-agent", "x"), ("authorization", "Bearer t0ken-1"))


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the work does not depend on which token (if any) matched."""
    compared: list[bytes] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    for token in ["other-token", "t0ken-1", "nope"]:
        compared.clear()
        valid(("authorization", f"Bearer {token}"))
        assert compared == TOKENS, token


def test_read_tokens_strips_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("\n  a-token  \n\n\tb\n   \nmot-de-passe-\u00e9t\u00e9\n", encoding="utf-8")
    assert auth.read_tokens(path) == [b"a-token", b"b", "mot-de-passe-\u00e9t\u00e9".encode()]


def test_no_tokens_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        auth.TokenAuthInterceptor([])
    assert str(info.value) == "the auth token file has no tokens"


class Handler(SimpleNamespace):
    request_streaming = False
    response_streaming = True


class Aborted(Exception):
    pass


class Context:
    def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


def intercept(method: str, metadata: tuple[tuple[str, str], ...], known: bool = True):
    details = SimpleNamespace(method=method, invocation_metadata=metadata)
    handler = Handler() if known else None

    def continuation(got: object) -> Handler | None:
        assert got is details  # the call's own details go on to the next interceptor
        return handler

    interceptor = auth.TokenAuthInterceptor(TOKENS)
    return interceptor.intercept_service(continuation, details), handler


def test_the_interceptor_passes_valid_calls_and_health() -> None:
    evaluate = "/gradserve.v1.Gradient/Evaluate"
    got, handler = intercept(evaluate, (("authorization", "Bearer t0ken-1"),))
    assert got is handler
    got, handler = intercept("/grpc.health.v1.Health/Check", ())
    assert got is handler
    got, handler = intercept(evaluate, (("authorization", "Bearer t0ken"),))
    assert got is not handler
    assert intercept("/no.Such/Method", (), known=False)[0] is None


def test_the_interceptor_denies_with_unauthenticated_in_the_call_s_shape() -> None:
    denied, _ = intercept("/gradserve.v1.Gradient/StreamJacobian", ())
    assert (denied.request_streaming, denied.response_streaming) == (False, True)
    with pytest.raises(Aborted) as info:
        denied.unary_stream(object(), Context())
    assert info.value.args == (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def test_the_token_file_is_read_as_utf_8_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started under a Latin-1 locale (LANG=de_DE.ISO-8859-1, say) reads the file as
    UTF-8 all the same: ``open`` without an encoding asks ``io.text_encoding``, which would
    then answer the locale's."""
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "latin-1")
    path = tmp_path / "tokens"
    path.write_bytes("t\u00f6k\u00e9n-1\n".encode())
    assert path.read_text() != "t\u00f6k\u00e9n-1\n"  # what the locale would make of it
    assert auth.read_tokens(path) == ["t\u00f6k\u00e9n-1".encode()]
