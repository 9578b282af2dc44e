"""A small local web site for the browser tests (127.0.0.1, a thread of this process)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

USER = "alice@example.test"
PASSWORD = "Canary-pw-7Qz!x91-browser"  # what the env secret backend holds
SESSION = "sess-4f1d2e"

COOKIE = "SESSION-A-SECRET-c00k1e"  # what /set-cookie hands out
WEBRTC_PAGE = """<title>rtc</title><p id=out>starting</p><script>
const out = document.getElementById("out");
try {
  const pc = new RTCPeerConnection({iceServers: [{urls: "stun:127.0.0.1:PORT"}]});
  pc.createDataChannel("x");
  pc.onicecandidate = (e) => { out.textContent += " candidate"; };
  pc.createOffer().then((o) => pc.setLocalDescription(o))
    .then(() => { out.textContent = "offer set"; })
    .catch((e) => { out.textContent = "offer failed " + e; });
} catch (e) { out.textContent = "no webrtc: " + e; }
</script>"""

PAGES = {
    "/": """<title>Home</title><h1>Welcome to the test site</h1>
<p>The answer to the riddle is <b>blue penguin</b>.</p>
<a href="/form">Profile form</a> <a href="http://blocked.example/steal">Partner site</a>
<a href="/files/report.csv">Report</a>
<form method="post" action="/delete"><button>Delete account</button></form>""",
    "/form": """<title>Profile</title><h1>Profile</h1><form action="/saved">
<label>Nickname <input name="nick"></label>
<label>Password <input type="password" name="pw"></label>
<label>Security code <input name="cvv"></label>
<label>One-time code <input autocomplete="one-time-code" name="code2"></label>
<button type="submit">Save</button></form>""",
    "/login": """<title>Sign in</title><h1>Sign in</h1><form method="post" action="/login">
<label>Email <input type="email" name="email"></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button></form>""",
}


@dataclass
class SiteState:
    deleted: int = 0
    logins: int = 0
    bad_logins: int = 0
    saved: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


class Site:
    def __init__(self) -> None:
        self.state = SiteState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: str, headers: dict[str, str] | None = None,
                      ctype: str = "text/html; charset=utf-8") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _logged_in(self) -> bool:
                return f"sid={SESSION}" in self.headers.get("Cookie", "")

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                state.paths.append(path)
                if path == "/account":
                    if not self._logged_in():
                        self._send(302, "", {"Location": "/login"})
                        return
                    self._send(200, "<title>Account</title><h1>Your account</h1>"
                               "<p>Balance: 42 credits</p><a href='/'>Home</a>")
                elif path == "/saved":
                    state.saved.append(query)
                    self._send(200, "<title>Saved</title><p>Saved.</p>")
                elif path == "/files/report.csv":
                    self._send(200, "a,b\n1,2\n", {"Content-Disposition":
                                                    'attachment; filename="report.csv"'},
                               ctype="text/csv")
                elif path == "/attach":  # a download named by the server (?name=...)
                    name = parse_qs(query).get("name", ["x.txt"])[0]
                    self._send(200, f"ATTACKER-CONTENT {name}\n", {
                        "Content-Disposition": f'attachment; filename="{name}"'},
                        ctype="application/octet-stream")
                elif path == "/get":  # a page linking to /attach?<same query>
                    self._send(200, f"<title>Files</title><a href='/attach?{query}'>Get it</a>")
                elif path == "/set-cookie":  # a login: the session cookie of whoever came
                    self._send(200, "<title>Logged in</title><p>welcome</p>",
                               {"Set-Cookie": f"f7sid={COOKIE}; Path=/"})
                elif path == "/echo-cookie":
                    self._send(200, "<title>Echo</title><p>cookie header: "
                               f"[{self.headers.get('Cookie', '')}]</p>")
                elif path == "/webrtc":  # tries to reach a STUN server on loopback UDP
                    port = parse_qs(query).get("port", ["9"])[0]
                    self._send(200, WEBRTC_PAGE.replace("PORT", port))
                elif path == "/go-private":
                    self._send(302, "", {"Location": "http://10.255.255.1/"})
                elif path in PAGES:
                    self._send(200, PAGES[path])
                else:
                    self._send(404, "<title>Not found</title><p>nothing here</p>")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                state.paths.append(self.path)
                if self.path == "/delete":
                    state.deleted += 1
                    self._send(200, "<title>Deleted</title><p>Account deleted.</p>")
                elif self.path == "/login":
                    if form.get("email") == [USER] and form.get("password") == [PASSWORD]:
                        state.logins += 1
                        self._send(302, "", {"Location": "/account",
                                             "Set-Cookie": f"sid={SESSION}; Path=/; HttpOnly"})
                    else:
                        state.bad_logins += 1
                        self._send(200, PAGES["/login"] + "<p>Wrong password</p>")
                else:
                    self._send(404, "no")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = f"http://localhost:{self.port}"  # the pre-authenticated site
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
