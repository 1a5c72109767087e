"""Private build sources on 127.0.0.1 that demand HTTP basic auth, as a company index or git server does: a PEP 503
index (its one sdist link answers 404, so a build from it fails in pip) and a git smart-HTTP server (git
http-backend). Each keeps the Authorization headers it was sent."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

INDEX_PAGE = """<!DOCTYPE html><html><body>
<a href="/files/llama_cpp_python-0.3.99.tar.gz#sha256=00">llama_cpp_python-0.3.99.tar.gz</a>
</body></html>
"""


class _AuthServer(ThreadingHTTPServer):
    """Answers 401 unless the request carries basic auth for user:password; `serve(handler)` does the rest."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.authorized: list[str] = []  # paths served with the right credentials
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                if self.headers.get("Authorization") != server.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.authorized.append(self.path)
                server.serve(self)

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError


class PrivateIndex(_AuthServer):
    def serve(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.rstrip("/") != "/simple/llama-cpp-python":
            request.send_error(404)
            return
        body = INDEX_PAGE.encode()
        request.send_response(200)
        request.send_header("Content-Type", "text/html")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


class PrivateGit(_AuthServer):
    """git's smart HTTP over the bare repositories under `root` (git http-backend as a CGI)."""

    def __init__(self, root: Path, user: str, password: str) -> None:
        self.root = root
        super().__init__(user, password)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        env = os.environ | {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                            "QUERY_STRING": query, "REQUEST_METHOD": request.command, "REMOTE_USER": "ci",
                            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
                            "CONTENT_LENGTH": str(len(body)),
                            "HTTP_GIT_PROTOCOL": request.headers.get("Git-Protocol", "")}
        done = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
        head, _, content = done.stdout.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(value.split()[0]) for name, value in headers if name.lower() == "status"), 200)
        request.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                request.send_header(name, value.strip())
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)
