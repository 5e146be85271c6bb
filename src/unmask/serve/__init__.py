"""``unmask serve``: an OpenAI-compatible HTTP server with request batching and live reveal streaming.

- :mod:`.schemas`: request bodies and OpenAI's error shape; :mod:`.prompts`
  and :mod:`.plan`: a request checked and turned into prompt ids, one
  :class:`~unmask.config.GenerationConfig` and one seed per row;
- :mod:`.scheduler`: batches of compatible requests, one
  :func:`unmask.generate` call each, in a worker thread;
  :mod:`.engine`: that call and its listener (stream events, dropped rows);
- :mod:`.guard`: limits on clients (host, origin, API key, body size and
  deadlines, open connections);
- :mod:`.app`: the FastAPI routes; :mod:`.stream`: server-sent events;
  :mod:`.metrics`: Prometheus text; :mod:`.playground`: the page at ``/``.
"""

from .app import create_app
from .plan import Served
from .settings import ServeSettings

__all__ = ["Served", "ServeSettings", "create_app"]
