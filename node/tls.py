"""The TLS side of the receiving door: the server context and the handshake of one connection.

The handshake runs in the connection's own thread with the ARTIM deadline, never in the accept
loop: a client that opens a TCP connection and then stalls in the handshake must cost one thread
for a few seconds, not every other sender's access to the node.
"""

from __future__ import annotations

import socket
import ssl
import time

from node.settings import NodeTlsSettings


def server_context(settings: NodeTlsSettings) -> ssl.SSLContext:
    """TLS 1.2 or later with the node's certificate; peers' certificates verified when a CA is set
    (required when ``require_client_certificate``, checked when offered otherwise)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certificate, settings.private_key)
    if settings.ca_certificates is not None:
        context.load_verify_locations(cafile=settings.ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED if settings.require_client_certificate else ssl.CERT_OPTIONAL
    return context


def handshake(raw: socket.socket, context: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    """Wrap an accepted socket and finish the handshake before ``deadline`` (time.monotonic()).

    ``do_handshake`` counts its timeout across all its reads, so a client trickling bytes cannot
    stretch it. Raises ``TimeoutError``, ``ssl.SSLError`` (e.g. no or an untrusted client
    certificate) or ``OSError`` (the peer went away).
    """
    raw.settimeout(max(deadline - time.monotonic(), 0.001))
    wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    try:
        wrapped.do_handshake()
    except BaseException:
        wrapped.close()
        raise
    return wrapped

