"""A real SMTP server (aiosmtpd) for the mail-delivery tests, on 127.0.0.1 only.

Prints one JSON object per line on stdout:
  {"event": "ready", "port": P}        once it accepts connections
  {"event": "message", "mail_from", "rcpt_tos", "auth_user", "tls", "subject", "from",
   "to", "message_id", "date", "body"}  for every message it accepted (body decoded)
  {"event": "tls_hello"}               a client began a TLS handshake (implicit TLS)
  {"event": "ehlo", "tls"}             a client said EHLO (so a connection was made)
  {"event": "refused"}                 for a DATA it answered with 451 (--fail-first)
  {"event": "rejected", "address"}     for a RCPT it answered with 550 (--reject)

  --port P                 port on 127.0.0.1 (required)
  --tls none|starttls|tls  plain; STARTTLS required before MAIL; or implicit TLS
  --ca-out PATH            with TLS: where to write the PEM of the test CA that signed
                           the server's certificate (for 127.0.0.1 and localhost)
  --auth USER:PASSWORD     require AUTH (PLAIN/LOGIN) with these credentials
  --fail-first N           answer the first N messages' DATA with 451 (try later)
  --reject ADDR            answer RCPT TO:<ADDR> with 550 (no such user)
  --lifetime SECONDS       exit by itself after this long (default 300)
"""

import argparse
import datetime
import email
import email.policy
import ipaddress
import json
import os
import ssl
import sys
import tempfile
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def make_cert(ca_out):
    """A test CA and a server certificate it signed; returns an SSLContext."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp_sink test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    with open(ca_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    d = tempfile.mkdtemp(prefix="smtp-sink-")
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


class Handler:
    def __init__(self, fail_first, reject):
        self.fail_left = fail_first
        self.reject = (reject or "").lower()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        emit({"event": "ehlo", "tls": session.ssl is not None})
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject and address.lower() == self.reject:
            emit({"event": "rejected", "address": address})
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_left > 0:
            self.fail_left -= 1
            emit({"event": "refused"})
            return "451 4.3.0 try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        auth_user = session.auth_data.login.decode() if session.auth_data else None
        emit(
            {
                "event": "message",
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "auth_user": auth_user,
                "tls": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                "subject": str(msg["subject"]),
                "from": str(msg["from"]),
                "to": str(msg["to"]),
                "message_id": str(msg["message-id"]),
                "date": str(msg["date"]),
                "body": msg.get_content(),
            }
        )
        return "250 2.0.0 accepted"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    ap.add_argument("--ca-out")
    ap.add_argument("--auth")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--reject")
    ap.add_argument("--lifetime", type=float, default=300.0)
    a = ap.parse_args()

    kwargs = {}
    ssl_context = None
    if a.tls != "none":
        if not a.ca_out:
            ap.error("--tls needs --ca-out")
        ctx = make_cert(a.ca_out)
        if a.tls == "tls":
            # Called at the client's hello, before it can refuse the certificate:
            # the test sees the attempt even when the handshake then fails.
            ctx.sni_callback = lambda *_: emit({"event": "tls_hello"})
            ssl_context = ctx
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    if a.auth:
        user, _, password = a.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, auth_data=auth_data if ok else None)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS here; implicit TLS is encrypted too.
            auth_require_tls=a.tls == "starttls",
        )

    controller = Controller(
        Handler(a.fail_first, a.reject),
        hostname="127.0.0.1",
        port=a.port,
        ssl_context=ssl_context,
        server_hostname="localhost",
        **kwargs,
    )
    controller.start()
    emit({"event": "ready", "port": a.port})
    done = threading.Event()
    try:
        done.wait(a.lifetime)
    finally:
        controller.stop()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
