"""The KoboldAI API under /api/ (server.kobold_api), as Aphrodite serves it."""
