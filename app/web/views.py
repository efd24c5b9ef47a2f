"""The HTTP gateway, served by every worker on UBS_WEB_HOST:UBS_WEB_PORT: its routes, their scopes, their modules.

    POST /operations[?wait=true]        operations:write  submit an operation (202, or 200 with its result)
    POST /operations?replay=P:O         operator          the same, replaying the dead letter at P:O
    GET  /operations/{user_id}/{op_id}  accounts:read     the stored result of one operation (404 until it exists);
                                        (or operations:write, or operator: who may submit may read the answer)
    GET  /accounts/{user_id}            accounts:read     balances from the accounts table, and the first open holds
    GET  /accounts/{user_id}/holds      accounts:read     open holds, a page at a time (?limit=N&after=HOLD_ID)
    GET  /accounts/{user_id}/events     accounts:read     history from the database, newest first (?limit=N)
    GET  /assets, /assets/{asset}       any key           the asset registry
    POST /assets                        assets:write      register an asset
    GET  /health                        none              liveness and what this worker owns
    GET  /metrics                       metrics:read      Prometheus text format (app.guards.monitoring)

Each route is served by the module of its resource: /operations and
/operations/{user_id}/{op_id} by app.web.operations, /accounts/{user_id} and its
/holds by app.web.accounts, its /events by app.web.history, /assets by
app.web.asset_views, /health by app.web.health. What they share: the error and
Retry-After answers and the count of every answer (app.web.answers), what a view
reads of a request (app.web.parsing), reads answered at the user's owner
(app.web.at_owner), and waits for what a checkpoint writes (app.web.waiting).
A view registers its route when its module is imported: this module imports
them all, and the worker imports this module (app.worker).

Once any key is configured (app.web.access), every route but /health answers 401
without a valid key and 403 naming the scope it lacks or the user outside its
ranges, before it reads a body, forwards or produces anything. Table reads go to
the worker that owns the user's partition, which decides again on the client's
own Authorization header; any worker answers for any user. Client mistakes get a
4xx JSON body naming the field; an unavailable dependency is a 503, never a false 202.
A body over UBS_MAX_BODY_BYTES is a 413 however it is sent; at most
UBS_WEB_MAX_WAITERS requests wait for results here at once, and one more is a
503 ``overloaded``; slow clients are disconnected (app.web.limits).
"""

from app.web import accounts, asset_views, health, history, operations  # noqa: F401  (each registers its routes)
