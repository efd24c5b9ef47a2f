"""Faust agents: ``ubscore`` applies operations, ``settlement`` writes events to the database."""
