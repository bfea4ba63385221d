"""The web page at `/`: a chat in the browser over the native API (streamed turns, item cards with posters or product
photos, like / dislike / accept, a photo by file, drag and drop or paste, speech by microphone or file).

The page is three files shipped in the package (static/index.html, app.js, style.css): nothing is fetched from
elsewhere, and the Content-Security-Policy sent with them allows scripts, styles and connections of this origin only
(no inline script or style, no event-handler attribute), so text from a catalog, a user or the model can only ever
be shown as text. The files are served from an allow-list of their names, never by a path from the request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The only files served under /static/: name -> media type
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def static_file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)


def mount_page(app: FastAPI) -> None:
    """Serve the page at `/` and its script and style sheet at `/static/NAME` (any other name answers 404)."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return static_file("index.html", "text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in FILES:
            raise HTTPException(404, "no such file")
        return static_file(name, FILES[name])
