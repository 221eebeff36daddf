"""A real HTTP server on 127.0.0.1 standing in for Google Drive and the Hugging Face Hub in the weights tests.

Drive: ``GET /gdrive/<id>`` serves the file registered for that id (``OSNET_ZOO_GDRIVE_URL`` =
``<base>/gdrive/{id}``), or, by the id's mode, Drive's HTML quota page, a body cut off before its announced
length, or a slow body (to kill a download midway). Hub (``HF_ENDPOINT`` = ``<base>``): ``HEAD``/``GET
/<repo>/resolve/<revision>/<file>`` answers as the Hub does for ``hf_hub_download``: the commit in
``X-Repo-Commit``, the sha256 as ``X-Linked-Etag``/``ETag`` and the size as ``X-Linked-Size``/``Content-Length``
(404 with ``X-Error-Code`` for an unknown revision or file); ``main`` resolves to the repo's head commit. Every
request is logged, so a test can assert that a cached load made none.
"""
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Tuple, Union

QUOTA_PAGE = (b'<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>'
              b'<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently.</p>'
              b'</body></html>')


class WeightsServer:
    """Start with ``with WeightsServer() as server:``; register files with ``drive`` and ``hub``."""

    def __init__(self) -> None:
        self.drive_files: Dict[str, bytes] = {}
        self.drive_modes: Dict[str, str] = {}
        self.hub_files: Dict[Tuple[str, str, str], bytes] = {}
        self.heads: Dict[str, str] = {}
        self.requests: List[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server.requests.append(f'HEAD {self.path}')
                self._answer(body=False)

            def do_GET(self):
                server.requests.append(f'GET {self.path}')
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split('?')[0]
                if path.startswith('/gdrive/'):
                    return self._drive(path[len('/gdrive/'):], body)
                if '/resolve/' in path:
                    return self._hub(path, body)
                self._send(200, b'ok', {'Content-Type': 'text/plain'}, body)

            def _send(self, status: int, payload: bytes, headers: Dict[str, str], body: bool,
                      length: int = None, slow: bool = False) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header('Content-Length', str(len(payload) if length is None else length))
                self.end_headers()
                if not body:
                    return
                if slow:  # 64 KiB every 50 ms: long enough to be killed midway
                    for i in range(0, len(payload), 1 << 16):
                        self.wfile.write(payload[i:i + (1 << 16)])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(payload)

            def _drive(self, gdrive_id: str, body: bool) -> None:
                mode = server.drive_modes.get(gdrive_id, 'ok')
                if mode == 'html':
                    return self._send(200, QUOTA_PAGE, {'Content-Type': 'text/html; charset=utf-8'}, body)
                data = server.drive_files.get(gdrive_id)
                if data is None:
                    return self._send(404, b'not found', {'Content-Type': 'text/plain'}, body)
                headers = {'Content-Type': 'application/octet-stream',
                           'Content-Disposition': f'attachment; filename="{gdrive_id}.pth"'}
                if mode == 'truncate':  # announces the whole file, sends half, closes
                    self._send(200, data[:len(data) // 2], headers, body, length=len(data))
                    self.close_connection = True
                    return
                self._send(200, data, headers, body, slow=mode == 'slow')

            def _hub(self, path: str, body: bool) -> None:
                repo, _, rest = path.lstrip('/').partition('/resolve/')
                revision, _, filename = rest.partition('/')
                commit = server.heads.get(repo) if revision == 'main' else revision
                known = {r for (rp, r, _) in server.hub_files if rp == repo}
                if commit not in known:
                    return self._send(404, b'revision not found', {'X-Error-Code': 'RevisionNotFound'}, body)
                data = server.hub_files.get((repo, commit, filename))
                if data is None:
                    return self._send(404, b'entry not found', {'X-Error-Code': 'EntryNotFound',
                                                                'X-Repo-Commit': commit}, body)
                etag = hashlib.sha256(data).hexdigest()
                self._send(200, data, {'X-Repo-Commit': commit, 'ETag': f'"{etag}"', 'X-Linked-Etag': f'"{etag}"',
                                       'X-Linked-Size': str(len(data)), 'Accept-Ranges': 'bytes',
                                       'Content-Type': 'application/octet-stream'}, body)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.gdrive_template = self.url + '/gdrive/{id}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def drive(self, gdrive_id: str, payload: Union[bytes, Path], mode: str = 'ok') -> None:
        """Serve ``payload`` as Drive file ``gdrive_id`` (mode 'ok', 'html', 'truncate' or 'slow')."""
        self.drive_files[gdrive_id] = Path(payload).read_bytes() if isinstance(payload, Path) else payload
        self.drive_modes[gdrive_id] = mode

    def hub(self, repo_id: str, commit: str, filename: str, payload: Union[bytes, Path], head: bool = True) -> None:
        """Serve ``payload`` as ``repo_id@commit/filename``; ``head``: ``main`` resolves to this commit."""
        self.hub_files[(repo_id, commit, filename)] = Path(payload).read_bytes() if isinstance(payload, Path) \
            else payload
        if head:
            self.heads[repo_id] = commit

    def __enter__(self) -> 'WeightsServer':
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the socket: later connections are refused."""
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
