"""Errors in OpenAI's shape, `{"error": {"message", "type", "code"}}` (code = the HTTP status, as
llama-server writes it), for every failure a client can cause; the server keeps serving after each."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BadRequestError, ContextOverflowError, WgmtpError

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 500: "server_error",
         501: "not_supported_error", 503: "unavailable_error"}


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and a one-line message naming cause and fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error_body(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "code": status}}


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def as_api_error(e: Exception) -> ApiError:
    """What a client is told about an exception raised while serving its request."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, (BadRequestError, ContextOverflowError)):
        return ApiError(400, str(e))
    if isinstance(e, WgmtpError):          # a chat template error, an engine error with a clear message
        return ApiError(400 if "chat template" in str(e) else 500, str(e))
    return ApiError(500, f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]}")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.message)

    @app.exception_handler(WgmtpError)
    async def _wgmtp(_: Request, e: WgmtpError) -> JSONResponse:
        a = as_api_error(e)
        return error_response(a.status, a.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = "no such endpoint" if e.status_code == 404 else str(e.detail)
        return error_response(e.status_code, msg)

    @app.exception_handler(Exception)
    async def _any(_: Request, e: Exception) -> JSONResponse:
        a = as_api_error(e)
        return error_response(a.status, a.message)
