"""What the Faust app is built from: its consumer, producer buffer, table manager and the guards it starts with.

app.faust_app imports these; none of them imports app.faust_app or anything above it
(tests/unit/test_import_direction.py holds the layers).
"""
