"""/docs (Swagger UI) and /redoc (ReDoc), with their scripts, styles and favicon served from the installed PyPI package
fastapi-offline (a bundle of swagger-ui-dist and redoc kept up to date with their releases). FastAPI's default pages
load these from CDNs and Google Fonts: blank on an offline machine, and every visit is reported to outside hosts."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .security import content_security_policy

ASSETS_URL = "/docs/assets"
ASSETS_DIR = files("fastapi_offline") / "static"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def add_api_docs(app: FastAPI) -> None:
    """Call on an app created with docs_url=None, redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")
    favicon = f"{ASSETS_URL}/favicon.png"
    swagger = get_swagger_ui_html(
        openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=favicon,
        # No "validator" badge, which would be an image from validator.swagger.io.
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None}).body
    # FastAPI's page starts Swagger UI with one inline script. Rather than a copy of its template with that script
    # moved to a file, this page's CSP admits exactly that script by its hash; every other page keeps a policy
    # without any inline script. The hash is taken from the page itself, so it follows FastAPI's template.
    swagger_scripts = [f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                       for script in INLINE_SCRIPT.findall(swagger)]
    redoc = get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                           redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=favicon,
                           with_google_fonts=False).body

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        policy = content_security_policy(request.headers.get("host", ""), script_sources=swagger_scripts)
        return HTMLResponse(swagger, headers={"Content-Security-Policy": policy})

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc)
