"""``fcnseg serve``: an HTTP API and a one-page web app around a ``Predictor``.

    from fcnseg.serve import create_app, ServeLimits
    app = create_app(predictor)                    # a FastAPI app; run it with uvicorn

See :mod:`fcnseg.serve.app` for the endpoints and limits.
"""

from fcnseg.serve.app import ServeLimits, create_app
from fcnseg.serve.server import BindError, run_server

__all__ = ["BindError", "ServeLimits", "create_app", "run_server"]
