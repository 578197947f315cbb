"""The gateway's routers, one per job; app.py includes them (in this order: auth, chatbots,
ws, pages)."""
