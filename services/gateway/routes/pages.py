"""The dashboard's two HTML pages and its icon; their scripts and styles are mounted at
/static (app.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return page("index.html")


@router.get("/login")
async def login_page() -> FileResponse:
    return page("login.html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # An SVG under the name browsers ask for by themselves (Chromium reads it by its type).
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


def page(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise HTTPException(404, f"{name} is not there yet.")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})
