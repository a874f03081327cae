"""OHIF's built viewer and Orthanc's DICOMweb behind one origin, for a browser test.

The viewer fetches ``/dicom-web/...`` from the page's own origin, so nothing is cross-origin and
Orthanc needs no CORS setting: a standard-library threaded HTTP server hands OHIF's ``dist`` files
out, answers ``/app-config.js`` with a configuration that names Orthanc's DICOMweb as the only data
source, and relays ``/dicom-web/`` requests to Orthanc with the browser's ``Host`` header, so the
absolute URLs Orthanc writes into its answers (BulkDataURI, RetrieveURL) point back at this origin.
Unknown paths get ``index.html``: OHIF routes in the browser (``/viewer?StudyInstanceUIDs=...``).
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

DICOMWEB = "/dicom-web"

#: OHIF's window.config: one DICOMweb data source (Orthanc through this origin), no modal dialogs
#: about cross-origin isolation or CPU rendering (headless Chromium may have neither), no telemetry.
APP_CONFIG = """localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: false,
  strictZSpacingForVolumeViewport: false,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (triphase test)',
      name: 'orthanc',
      wadoUriRoot: window.location.origin + '__ROOT__',
      qidoRoot: window.location.origin + '__ROOT__',
      wadoRoot: window.location.origin + '__ROOT__',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      omitQuotationForMultipartRequest: true,
      bulkDataURI: { enabled: true },
    },
  }],
};
""".replace("__ROOT__", DICOMWEB)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static OHIF files, the test's app-config.js, and a relay of /dicom-web/ to Orthanc."""

    orthanc_url = ""  # set per server by ``serve``

    def log_message(self, format: str, *args: object) -> None:
        return  # the test reports failures itself; a line per request would drown them

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self._send(200, "application/javascript", APP_CONFIG.encode())
        elif path.startswith(DICOMWEB + "/"):
            self._relay()
        else:
            if not Path(self.translate_path(path)).is_file():
                self.path = "/index.html"
            super().do_GET()

    def do_POST(self) -> None:
        if self.path.startswith(DICOMWEB + "/"):
            self._relay()
        else:
            self._send(405, "text/plain", b"read-only")

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        forwarded = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type", "host")}
        request = urllib.request.Request(self.orthanc_url + self.path, data=body, method=self.command,
                                         headers=forwarded)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, error.headers, error.read()
        self._send(status, headers.get("Content-Type", "application/octet-stream"), payload)

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def serve(dist: Path, orthanc_url: str, port: int) -> Iterator[str]:
    """Serve OHIF's ``dist`` with Orthanc (``http://127.0.0.1:PORT``) behind it; yields the base URL."""
    handler = type("Handler", (_Handler,), {"orthanc_url": orthanc_url.rstrip("/")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(dist)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
