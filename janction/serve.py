"""ASGI entry of real mode's web server (`scripts/serve.sh`): the application behind the request guard."""

from janction.asgi import application as _application
from janction.asgi_guard import Limits, RequestGuard

application = RequestGuard(_application, Limits.from_settings())
