"""HTTP gateway: Faust web views served by every worker."""
