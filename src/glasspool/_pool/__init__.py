"""The connection pool: a sans-IO state machine (``state``) driven by asyncio (``asyncio``)."""
