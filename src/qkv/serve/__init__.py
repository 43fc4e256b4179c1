"""Serve a trained model over HTTP, with an explorer page that shows its attention head by head.

    from qkv.serve import create_app
    app = create_app("runs/reverse")          # a FastAPI app; or pass a loaded Run
    # qkv serve --model runs/reverse          # the same app under uvicorn on 127.0.0.1:8000

Endpoints: GET / (the explorer page), GET /health, GET /v1/model, POST /v1/translate,
POST /v1/generate, POST /v1/explain; OpenAPI docs at /docs. Needs the `serve` extra
(`pip install 'qkv[serve]'`): FastAPI and uvicorn are imported only here.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"create_app": "qkv.serve.app", "serve": "qkv.serve.app"}
_EXTRA = {"fastapi", "uvicorn", "starlette", "pydantic"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _EXTRA:
                raise
            from qkv.errors import QkvError

            raise QkvError(f"serving needs {exc.name}; install it with: pip install 'qkv[serve]'") from None
        return getattr(module, name)
    raise AttributeError(f"module 'qkv.serve' has no attribute {name!r}")
