"""A deterministic simulator of the ledger agent (the idea of TigerBeetle's VOPR and FoundationDB's simulation).

The agent's real per-message code (``app.agents.ubscore.handle`` into an
``app.agents.batch.Batch``) runs against in-memory topics and tables under one
seeded scheduler, which kills the worker at and inside every checkpoint step,
redelivers in any interleaving of the two input streams, expires holds, lets
result rows age out and reuses ids after the retention window; then checks the
invariants. ``python -m tests.simulator --seeds N``; docs/simulator.md.
"""
