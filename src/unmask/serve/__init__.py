"""``unmask serve``: an OpenAI-compatible HTTP server with continuous batching and live reveal streaming.

- :mod:`.schemas`: request bodies and OpenAI's error shape; :mod:`.prompts`
  and :mod:`.plan`: a request checked and turned into prompt ids, one
  :class:`~unmask.config.GenerationConfig` and one seed per row;
- :mod:`.worker`: one :class:`unmask.engine.Engine` in its own thread, every
  request's rows sharing its calls; :mod:`.job`: a request in flight on the
  asyncio side; :mod:`.listener`: the engine's events of one request turned
  into its job's events (stream chunks, reveal events, rows to drop);
- :mod:`.guard`: limits on clients (host, origin, API key, body size and
  deadlines, open connections);
- :mod:`.app`: the FastAPI routes; :mod:`.stream`: server-sent events;
  :mod:`.metrics`: Prometheus text; :mod:`.playground`: the page at ``/``.
"""

from .app import create_app
from .plan import Served
from .settings import ServeSettings

__all__ = ["Served", "ServeSettings", "create_app"]
