"""Test certificates made with the ``openssl`` command: a CA, the node's server certificate, a client
certificate signed by that CA, and a client certificate from a CA the node does not trust."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _run(*args: str, cwd: Path) -> None:
    done = subprocess.run([require_tool("/usr/bin/openssl"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def _ca(folder: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)


def _signed(folder: Path, name: str, ca: str, *, server: bool) -> None:
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", cwd=folder)
    extensions = folder / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    extensions.write_text(f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-days", "2", "-extfile", extensions.name, "-out", f"{name}.pem", cwd=folder)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _signed(folder, "node", "ca", server=True)
    _signed(folder, "client", "ca", server=False)
    _signed(folder, "stranger", "other-ca", server=False)
    return Pki(ca=folder / "ca.pem", server_cert=folder / "node.pem", server_key=folder / "node.key",
               client_cert=folder / "client.pem", client_key=folder / "client.key",
               stranger_cert=folder / "stranger.pem", stranger_key=folder / "stranger.key")
