"""HTTP plumbing shared by every route: body reading and limits, deadlines, disconnects,
API keys and CORS, OpenAI-shaped errors, JSON/SSE rendering, request logs, graceful
shutdown, /metrics, /openapi.json and uvicorn's options."""
