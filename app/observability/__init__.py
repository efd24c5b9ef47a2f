"""The worker's metrics, log format and consumer lag: below the Faust app, which logs and counts through them."""
