"""The timers and services that run on the Faust app (input, recovery and group watches, /metrics): above the app."""
