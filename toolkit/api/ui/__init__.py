"""The web page at ``GET /`` (``server.ui``; off, every UI path answers 404).

One page, plain HTML, JavaScript and CSS shipped in ``static/`` (no build step, no CDN):

* a chat playground streaming through the server's own ``POST /v1/chat/completions``
  (``stream=true``, read as SSE), with sampling controls and a guided-JSON-schema box
  (sent as ``response_format`` ``json_schema``);
* a live dashboard of the engine from ``GET /ui/stats`` (running and waiting requests, KV
  usage, tokens/s, token totals, mean TTFT and ITL);
* the resolved configuration from ``GET /ui/config`` (model, max_model_len, determinism,
  the server options with the keys redacted).

The page and its static files load without a key; the data endpoints obey the keys (see
``toolkit.api.ui.serving``), and the page sends the key the user types, kept in the
browser's localStorage.
"""
