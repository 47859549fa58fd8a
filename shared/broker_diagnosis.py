"""Why a connection to the broker failed, and what to do: paho reports only that it failed.

The first steps of a connect are done again by hand: a TCP connect tells a dead broker from a
wrong port; a TLS handshake with the client's own context tells an unknown CA, an expired
certificate and a wrong host name apart; a plain client on a TLS port is told to use
``mqtts://``. Each failure says whether waiting could mend it (``stop_now``: no) and whether it
is a mistake or may mend by itself later (``temporary``: the exit status, shared/errors.py).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass

__all__ = ["NO_ANSWER", "ConnectFailure", "diagnose", "login_refused"]

NO_ANSWER = "no answer (is Mosquitto running and the port right?)"


@dataclass(frozen=True)
class ConnectFailure:
    text: str
    stop_now: bool = False  # waiting out the connect timeout cannot mend it
    temporary: bool = True  # it may mend by itself: a later start can succeed


# OpenSSL's verify codes (x509_vfy.h) that name a cause a user can fix.
_NOT_OUR_CA = {18, 19, 20, 21}  # self-signed, self-signed in chain, no local issuer, leaf
_EXPIRED, _NOT_YET_VALID, _HOSTNAME, _IP_ADDRESS = 10, 9, 62, 64


def diagnose(
    host: str, port: int, tls: ssl.SSLContext | None, ca_file: str | None
) -> ConnectFailure:
    """Why a connect to ``host:port`` fails, found by doing its first steps again."""
    try:
        sock = socket.create_connection((host, port), timeout=3)
    except OSError as exc:
        why = exc.strerror or str(exc)
        return ConnectFailure(f"{why} (is Mosquitto running and the port right?)")
    with sock:
        if tls is None:
            return _plain_failure(sock, host, port)
        try:
            with tls.wrap_socket(sock, server_hostname=host):
                return ConnectFailure(NO_ANSWER)
        except ssl.SSLCertVerificationError as exc:
            text = _certificate_problem(exc, host, ca_file)
            return ConnectFailure(text, stop_now=True, temporary=exc.verify_code == _NOT_YET_VALID)
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            return ConnectFailure(
                f"TLS handshake failed ({why}): is {port} the broker's TLS listener? (TLS is on"
                " because the URL says mqtts:// or ca_file is set)"
            )


def _plain_failure(sock: socket.socket, host: str, port: int) -> ConnectFailure:
    """A port that takes TCP but never answers MQTT: is it a TLS listener?"""
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with probe.wrap_socket(sock, server_hostname=host):
            return ConnectFailure(
                f"port {port} speaks TLS: use mqtts://{host}:{port}"
                " (and ca_file, ISPLITEE_CA_FILE, for a private CA)",
                stop_now=True,
                temporary=False,
            )
    except (ssl.SSLError, OSError):
        return ConnectFailure(NO_ANSWER)


LOGIN_REFUSED = ("Not authorized", "Bad user name or password", "Bad authentication method")
"""CONNACK reasons that refuse the account itself."""


def login_refused(reason: str, user: str | None, has_password: bool) -> str:
    """The line for a refused log-in. Temporary, for the exit status: the usual fix is on the
    broker (an account added, then Mosquitto reloaded), and the node should come back then."""
    who = f"account {user!r}" if user else "an anonymous client"
    if user and not has_password:
        return (
            f"{reason}: the broker refused {who} at log-in, with no password given: set"
            " ISPLITEE_PASSWORD (or the installer's --password-file)"
        )
    return (
        f"{reason}: the broker refused {who} at log-in; check username (ISPLITEE_USERNAME) and"
        " ISPLITEE_PASSWORD, or create the account (deploy/broker-setup.sh add-node DIR ID,"
        " add-worker DIR ID); a broker reads new accounts when reloaded (systemctl reload"
        " mosquitto)"
    )


def _certificate_problem(exc: ssl.SSLCertVerificationError, host: str, ca_file: str | None) -> str:
    code = exc.verify_code
    ca = ca_file or "the system's CA store"
    if code in _NOT_OUR_CA:
        return (
            f"TLS: the broker's certificate is not signed by a CA in {ca} ({exc.verify_message});"
            " set ca_file (ISPLITEE_CA_FILE) to the CA that signed it, e.g. the ca.crt of"
            " deploy/broker-setup.sh init"
        )
    if code == _EXPIRED:
        return (
            "TLS: the broker's certificate has expired; renew it on the broker"
            " (or check this machine's clock)"
        )
    if code == _NOT_YET_VALID:
        return (
            "TLS: the broker's certificate is not valid yet: this machine's clock is probably"
            " wrong (a Pi without network time starts in the past; check timedatectl)"
        )
    if code in (_HOSTNAME, _IP_ADDRESS):
        kind = "an address" if _is_ip(host) else "a name"
        return (
            f"TLS: the broker's certificate is not valid for {host!r}; connect by {kind}"
            " in its subjectAltName, or reissue it for this one"
            " (deploy/broker-setup.sh cert DIR HOSTNAME)"
        )
    return f"TLS: the broker's certificate was refused: {exc.verify_message}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
