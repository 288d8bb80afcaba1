"""Bearer tokens, TLS and mutual TLS, with certificates made at run time (trustme).

Raw grpc channels and the SDK (`gs.Client(token=..., tls=gs.TLS(...))`), against in-process
servers and one `gradserve serve` process.
"""

from __future__ import annotations

from pathlib import Path

import gradserve_client as gs
import grpc
import numpy as np
import pytest
import trustme
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wire import G, arrays, call_error, tensors

GRAPH = G([("x", "float64", [])], [("y", "sin", ["x"], {})], ["y"])
TOKEN = "t0ken-1"
SERVING = health_pb2.HealthCheckResponse.SERVING


class Pki:
    """A server CA with a server certificate (localhost, 127.0.0.1) and a client
    certificate, and a second, unrelated CA with its own client certificate."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        self.other_ca = self._write("other-ca.pem", other.cert_pem.bytes())
        self.server_cert = self._chain("server.pem", server)
        self.server_key = self._write("server-key.pem", server.private_key_pem.bytes())
        client = ca.issue_cert("client@gradserve.test")
        self.client_cert = self._chain("client.pem", client)
        self.client_key = self._write("client-key.pem", client.private_key_pem.bytes())
        stranger = other.issue_cert("stranger@gradserve.test")
        self.stranger_cert = self._chain("stranger.pem", stranger)
        self.stranger_key = self._write("stranger-key.pem", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def _chain(self, name: str, leaf: trustme.LeafCert) -> Path:
        return self._write(name, b"".join(b.bytes() for b in leaf.cert_chain_pems))

    def credentials(self, cert: Path | None = None, key: Path | None = None):
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"\n  other-token  \n{TOKEN}\n")
    return path


def evaluate(channel: grpc.Channel, metadata=None, timeout: float = 10) -> float:
    """sin(0.5), computed by the server."""
    stub = pb_grpc.GradientStub(channel)
    request = pb.EvaluateRequest(graph=GRAPH.proto(), inputs=tensors({"x": 0.5}))
    return arrays(stub.Evaluate(request, metadata=metadata, timeout=timeout).outputs)["y"]


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    """The code of a call the transport refuses (no TLS handshake)."""
    with pytest.raises(grpc.RpcError) as info:
        evaluate(channel, timeout=5)
    return info.value.code()


# ---- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [("authorization", "Bearer wrong")],
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", f"Bearer {TOKEN}x")],
        [("authorization", f"Bearer {TOKEN[:-1]}")],
        [("authorization", "Bearer ")],
    ],
    ids=["none", "wrong", "basic", "longer", "prefix", "empty"],
)
def test_missing_or_wrong_token_is_unauthenticated(make_server, token_file, metadata):
    running = make_server(auth_token_file=token_file)
    _, stub = running.stub()
    request = pb.EvaluateRequest(graph=GRAPH.proto(), inputs=tensors({"x": 0.5}))
    err = call_error(stub.Evaluate, request, metadata=metadata, timeout=10)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    # every kind of RPC is guarded, streams included
    stream = pb.StreamJacobianRequest(graph=GRAPH.proto(), inputs=tensors({"x": 0.5}))
    assert call_error(stub.StreamJacobian, stream, metadata=metadata).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert call_error(stub.ListOperators, pb.ListOperatorsRequest()).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_valid_tokens_are_served_and_health_stays_open(make_server, token_file):
    running = make_server(auth_token_file=token_file)
    channel, _ = running.stub()
    for token in (TOKEN, "other-token"):
        assert evaluate(channel, metadata=[("authorization", f"Bearer {token}")]) == np.sin(0.5)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
    with gs.Client(running.address, token=TOKEN, timeout=10) as client:
        assert np.isclose(client.evaluate(GRAPH.proto(), {"x": 0.5})["y"], np.sin(0.5))
        assert "auth" in client.server_info().features
    with gs.Client(running.address, token="nope", timeout=10) as client:
        assert client.health() == "SERVING"  # no token needed for probes
        with pytest.raises(gs.Unauthenticated):
            client.evaluate(GRAPH.proto(), {"x": 0.5})


# ---- TLS and mTLS -----------------------------------------------------------------------------


def test_tls(make_server, pki):
    running = make_server(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with grpc.secure_channel(running.address, pki.credentials()) as channel:
        assert evaluate(channel) == np.sin(0.5)
    with grpc.insecure_channel(running.address) as channel:
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
    # a client that trusts another CA refuses the server
    other = grpc.ssl_channel_credentials(root_certificates=pki.other_ca.read_bytes())
    with grpc.secure_channel(running.address, other) as channel:
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
    # the SDK, by IP and by name (server_name checks the certificate's DNS name)
    with gs.Client(running.address, tls=gs.TLS(ca=pki.ca), timeout=10) as client:
        assert "tls" in client.server_info().features
    tls = gs.TLS(ca=pki.ca.read_bytes(), server_name="localhost")
    with gs.Client(running.address, tls=tls, timeout=10) as client:
        assert client.health() == "SERVING"
    wrong_name = gs.TLS(ca=pki.ca, server_name="evil.example")
    with gs.Client(running.address, tls=wrong_name, retries=0) as c, pytest.raises(gs.Unavailable):
        c.server_info()


def test_mtls(make_server, pki):
    running = make_server(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)
    address = running.address
    valid = pki.credentials(pki.client_cert, pki.client_key)
    with grpc.secure_channel(address, valid) as channel:
        assert evaluate(channel) == np.sin(0.5)
    with grpc.secure_channel(address, pki.credentials()) as channel:  # no client certificate
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
    stranger = pki.credentials(pki.stranger_cert, pki.stranger_key)  # from another CA
    with grpc.secure_channel(address, stranger) as channel:
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(address) as channel:
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
    tls = gs.TLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    with gs.Client(address, tls=tls, timeout=10) as client:
        assert {"tls", "mtls"} <= set(client.server_info().features)
    tls = gs.TLS(ca=pki.ca, cert=pki.stranger_cert, key=pki.stranger_key)
    with gs.Client(address, tls=tls, timeout=5, retries=0) as client:
        with pytest.raises(gs.Unavailable):
            client.server_info()
        # even health needs the TLS handshake: mTLS is below gRPC
        with pytest.raises(gs.Unavailable):
            client.health()


def test_serve_process_with_mtls_and_tokens(server_process, pki, token_file):
    proc = server_process(
        "--tls-cert", str(pki.server_cert),
        "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
        "--auth-token-file", str(token_file),
    )  # fmt: skip
    tls = gs.TLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    with gs.Client(proc.address, tls=tls, token=TOKEN, timeout=10) as client:
        assert np.isclose(client.evaluate(GRAPH.proto(), {"x": 0.5})["y"], np.sin(0.5))
        assert {"auth", "tls", "mtls"} <= set(client.server_info().features)
    with gs.Client(proc.address, tls=tls, timeout=10) as client:
        assert client.health() == "SERVING"
        with pytest.raises(gs.Unauthenticated):
            client.evaluate(GRAPH.proto(), {"x": 0.5})
    with grpc.insecure_channel(proc.address) as channel:
        assert refused(channel) == grpc.StatusCode.UNAVAILABLE
