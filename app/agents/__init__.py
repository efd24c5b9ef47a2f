"""Faust agents: ``ubscore``, the ledger, the only place where money changes."""
