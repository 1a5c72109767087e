"""Real alert receivers on 127.0.0.1: an HTTP server (the JSON webhook and Slack's webhook format) and a small SMTP
server that speaks plain SMTP, STARTTLS, implicit TLS and AUTH PLAIN, with a self-signed certificate made here."""

from __future__ import annotations

import base64
import datetime
import email
import ipaddress
import json
import socketserver
import ssl
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class HttpReceiver(ThreadingHTTPServer):
    """Keeps each JSON body it accepts, and the path and headers of every request; the first `failures` requests get
    a 500 instead, and their bodies are not kept."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append((self.path, dict(self.headers)))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_error(500)
                    return
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class SmtpReceiver(socketserver.ThreadingTCPServer):
    """Enough of RFC 5321 for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT; with `tls`, STARTTLS (or TLS from the
    first byte when `implicit_tls`); with `login`, AUTH PLAIN, required before MAIL. Keeps each message it accepts,
    and each login it refused."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 login: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.refused_logins: list[str] = []
        self.tls_sessions = 0
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def setup(self) -> None:
                if implicit_tls:
                    self.request = tls.wrap_socket(self.request, server_side=True)
                    receiver.tls_sessions += 1
                super().setup()

            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def start_tls(self) -> None:
                self.reply("220 ready to start TLS")
                self.connection = tls.wrap_socket(self.connection, server_side=True)
                self.rfile, self.wfile = self.connection.makefile("rb"), self.connection.makefile("wb", buffering=0)
                receiver.tls_sessions += 1

            def handle(self) -> None:
                self.reply("220 127.0.0.1 test SMTP")
                recipients: list[str] = []
                secured, signed_in = implicit_tls, login is None
                while line := self.rfile.readline().decode().rstrip("\r\n"):
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        # the server's name first, then one extension a line; the last line has a space
                        lines = ["127.0.0.1", *(["STARTTLS"] if tls and not secured else []),
                                 *(["AUTH PLAIN"] if login else []), "8BITMIME"]
                        for extension in lines[:-1]:
                            self.reply(f"250-{extension}")
                        self.reply(f"250 {lines[-1]}")
                    elif verb == "STARTTLS" and tls and not secured:
                        self.start_tls()
                        secured = True
                    elif verb == "AUTH" and login:
                        user, password = base64.b64decode(line.split()[2]).split(b"\0")[1:]
                        if (user.decode(), password.decode()) == login:
                            signed_in = True
                            self.reply("235 2.7.0 authenticated")
                        else:
                            receiver.refused_logins.append(user.decode())
                            self.reply(f"535 5.7.8 authentication failed for {user.decode()}:{password.decode()}")
                    elif verb == "MAIL" and not signed_in:
                        self.reply("530 5.7.0 authentication required")
                    elif verb == "MAIL":
                        recipients = []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(line.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = []
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                        message = email.message_from_bytes(b"".join(data), policy=policy.default)
                        receiver.messages.append((recipients, message))
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 OK")

        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that refuses the certificate ends the handshake: the test asserts what the client says

    @property
    def port(self) -> int:
        return self.server_address[1]


def serving(server):
    # shutdown() waits for the loop's next poll: at the default 0.5 s, stopping a test's three receivers took ~1 s
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return server


def stop(*servers) -> None:
    for server in servers:
        server.shutdown()
        server.server_close()


def self_signed_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1, and the certificate's PEM file (what
    a client must trust: SSL_CERT_FILE)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vramwatch test SMTP")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
